# kubedrill node facts (format 1). POSIX sh (dash-compatible); sent on stdin of `sh -s`.
# Read-only, no network, no root needed. Every probe is guarded: a missing tool or file is
# reported as a `finding=` line, never a failure. Output: a version line, then `@@section`
# headers followed by `key=value` lines (split at the first `=`), then `@@end`.
LC_ALL=C
export LC_ALL
exec 2>/dev/null

have() { command -v "$1" >/dev/null 2>&1; }
finding() { echo "finding=$*"; }
# First line of a command's output, with a time limit where `timeout` exists.
first_line() {
  if have timeout; then timeout 5 "$@" 2>&1 | head -n 1; else "$@" 2>&1 | head -n 1; fi
}

echo "kubedrill-facts 1"

echo "@@os"
if [ -r /etc/os-release ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      ID=*|VERSION_ID=*|ID_LIKE=*|PRETTY_NAME=*) echo "$line" ;;
    esac
  done < /etc/os-release
else
  finding "/etc/os-release not readable"
fi

echo "@@kernel"
echo "release=$(uname -r)"
echo "arch=$(uname -m)"

echo "@@kconfig"
KREL=$(uname -r)
KPAT='^(# )?CONFIG_(BPF|BPF_SYSCALL|BPF_JIT|NET_CLS_BPF|NET_CLS_ACT|NET_SCH_INGRESS|CRYPTO_SHA1|CRYPTO_USER_API_HASH|CGROUPS|CGROUP_BPF|PERF_EVENTS|SCHEDSTATS|XDP_SOCKETS|NET_SCH_FQ|VXLAN|GENEVE|FIB_RULES|NETKIT|WIREGUARD|DEBUG_INFO_BTF|NF_CONNTRACK|BPF_EVENTS|NET_ACT_BPF|NET_SCH_FQ_CODEL|IP_NF_IPTABLES|NETFILTER_XT_MATCH_SOCKET|NETFILTER_XT_TARGET_TPROXY|BPF_STREAM_PARSER|BPF_LSM|IPV6|TUN|VETH)( is not set|=)'
if [ -r /proc/config.gz ] && have zcat && zcat /proc/config.gz >/dev/null 2>&1; then
  echo "source=/proc/config.gz"
  zcat /proc/config.gz | grep -E "$KPAT"
elif [ -r /proc/config.gz ] && have gzip && gzip -dc /proc/config.gz >/dev/null 2>&1; then
  echo "source=/proc/config.gz"
  gzip -dc /proc/config.gz | grep -E "$KPAT"
elif [ -r "/boot/config-$KREL" ]; then
  echo "source=/boot/config-$KREL"
  grep -E "$KPAT" "/boot/config-$KREL"
else
  echo "source=none"
  finding "kernel config not readable (no /proc/config.gz, no /boot/config-$KREL)"
fi

echo "@@modules"
if [ -r /proc/modules ]; then
  echo "loaded_source=/proc/modules"
  while read -r name rest; do
    case "$name" in
      cls_bpf|act_bpf|sch_ingress|sch_fq|sch_fq_codel|vxlan|geneve|udp_tunnel|ip6_udp_tunnel|wireguard|nf_conntrack|xt_socket|xt_TPROXY|ip_tables|iptable_nat|iptable_mangle|iptable_raw|iptable_filter|sha1_generic|algif_hash|tun|veth|netkit|ipv6|br_netfilter|overlay)
        echo "loaded=$name" ;;
    esac
  done < /proc/modules
else
  finding "/proc/modules not readable (kernel without module support?)"
fi
MODS="cls_bpf act_bpf sch_ingress sch_fq sch_fq_codel vxlan geneve udp_tunnel ip6_udp_tunnel wireguard nf_conntrack xt_socket xt_TPROXY ip_tables iptable_nat iptable_mangle iptable_raw iptable_filter sha1_generic algif_hash tun veth netkit br_netfilter overlay"
DEP="/lib/modules/$KREL/modules.dep"
if [ -r "$DEP" ]; then
  echo "available_source=modules.dep"
  for m in $MODS; do
    m2=$(echo "$m" | tr _ -)
    if grep -q -E "/($m|$m2)\.ko(\.[a-z]+)?:" "$DEP"; then echo "available=$m"; fi
  done
elif have modinfo; then
  echo "available_source=modinfo"
  for m in $MODS; do
    if modinfo -n "$m" >/dev/null 2>&1; then echo "available=$m"; fi
  done
else
  echo "available_source=none"
  finding "cannot list available modules (no $DEP, no modinfo)"
fi

echo "@@system"
CG=""
if [ -r /proc/mounts ]; then
  while read -r dev mnt fstype rest; do
    if [ "$mnt" = "/sys/fs/cgroup" ]; then CG="$fstype"; fi
    if [ "$mnt" = "/sys/fs/cgroup/unified" ] && [ "$fstype" = "cgroup2" ]; then UNIFIED=1; fi
  done < /proc/mounts
fi
case "$CG" in
  cgroup2) echo "cgroup=v2" ;;
  tmpfs) if [ -n "$UNIFIED" ]; then echo "cgroup=hybrid"; else echo "cgroup=v1"; fi ;;
  *) echo "cgroup=unknown"; finding "no cgroup filesystem mounted on /sys/fs/cgroup" ;;
esac
if [ -r /proc/swaps ]; then
  SWN=0; SWT=0
  while read -r sname stype ssize rest; do
    case "$ssize" in
      ''|*[!0-9]*) ;;
      *) SWN=$((SWN + 1)); SWT=$((SWT + ssize)) ;;
    esac
  done < /proc/swaps
  echo "swap_devices=$SWN"
  echo "swap_total_kib=$SWT"
else
  finding "/proc/swaps not readable"
fi
if have nproc; then
  echo "cpus=$(nproc)"
elif [ -r /proc/cpuinfo ]; then
  echo "cpus=$(grep -c '^processor' /proc/cpuinfo)"
else
  finding "cannot count CPUs"
fi
if [ -r /proc/meminfo ]; then
  while read -r k v rest; do
    if [ "$k" = "MemTotal:" ]; then echo "mem_total_kib=$v"; fi
  done < /proc/meminfo
else
  finding "/proc/meminfo not readable"
fi
DEFIF=""
if have ip; then
  set -f
  set -- $(ip route show default | head -n 1)
  set +f
  while [ $# -gt 1 ]; do
    if [ "$1" = "dev" ]; then DEFIF="$2"; break; fi
    shift
  done
  set --
fi
if [ -z "$DEFIF" ] && [ -r /proc/net/route ]; then
  while read -r iface dest rest; do
    if [ "$dest" = "00000000" ]; then DEFIF="$iface"; break; fi
  done < /proc/net/route
fi
if [ -n "$DEFIF" ]; then echo "default_route_iface=$DEFIF"; else finding "no IPv4 default route"; fi
if have ethtool; then echo "ethtool=yes"; else echo "ethtool=no"; finding "ethtool not installed: NIC queue maxima and offloads unknown"; fi
if have ip; then echo "iproute2=yes"; else echo "iproute2=no"; finding "ip (iproute2) not installed: addresses and XDP attachment unknown"; fi

for d in /sys/class/net/*; do
  [ -e "$d" ] || continue
  n=${d##*/}
  [ "$n" = "lo" ] && continue
  echo "@@nic $n"
  if [ -e "$d/device" ]; then echo "virtual=no"; else echo "virtual=yes"; fi
  drv=""
  if [ -e "$d/device/driver" ]; then
    drv=$(readlink "$d/device/driver")
    drv=${drv##*/}
  fi
  if [ -z "$drv" ] && have ethtool; then
    drv=$(ethtool -i "$n" | sed -n 's/^driver: //p' | head -n 1)
  fi
  [ -n "$drv" ] && echo "driver=$drv"
  [ -r "$d/mtu" ] && echo "mtu=$(cat "$d/mtu")"
  [ -r "$d/operstate" ] && echo "operstate=$(cat "$d/operstate")"
  [ -r "$d/address" ] && echo "mac=$(cat "$d/address")"
  rx=0; tx=0
  for q in "$d"/queues/rx-*; do [ -e "$q" ] && rx=$((rx + 1)); done
  for q in "$d"/queues/tx-*; do [ -e "$q" ] && tx=$((tx + 1)); done
  echo "sysfs_rx_queues=$rx"
  echo "sysfs_tx_queues=$tx"
  # ethtool for physical NICs and the default-route NIC only (nodes can have hundreds of veths).
  if have ethtool && { [ -e "$d/device" ] || [ "$n" = "$DEFIF" ]; }; then
    ethtool -l "$n" | {
      set -f
      sect=""
      while IFS= read -r line; do
        case "$line" in
          Pre-set*) sect=max ;;
          Current*) sect=current ;;
          Combined:*) set -- $line; [ -n "$sect" ] && echo "combined_$sect=$2" ;;
        esac
      done
    }
    ethtool -k "$n" | while IFS= read -r line; do
      case "$line" in
        rx-gro-hw:*|rx-checksumming:*|tx-checksumming:*|tcp-segmentation-offload:*|generic-receive-offload:*|large-receive-offload:*|generic-segmentation-offload:*|rx-vlan-offload:*)
          echo "offload=$line" ;;
      esac
    done
  fi
done

echo "@@links"
if have ip; then
  ip -d -o link show | while IFS= read -r line; do
    set -f
    set -- $line
    name=${2%:}
    name=${name%%@*}
    mode=""
    for w in "$@"; do
      case "$w" in
        xdp|xdpgeneric|xdpdrv|xdpoffload|xdpmulti) mode="$w" ;;
      esac
    done
    case "$line" in
      *prog/xdp*) [ -z "$mode" ] && mode=xdp ;;
    esac
    [ -n "$mode" ] && echo "xdp=$name $mode"
  done
  ip -o -4 addr show | while IFS= read -r line; do
    set -f
    set -- $line
    [ "$3" = "inet" ] && echo "addr=$2 $4"
  done
fi

echo "@@binaries"
for b in containerd ctr crictl runc kubeadm kubelet kubectl helm; do
  if have "$b"; then
    case "$b" in
      kubeadm) v=$(first_line kubeadm version -o short) ;;
      kubectl) v=$(first_line kubectl version --client) ;;
      helm) v=$(first_line helm version --short) ;;
      crictl|containerd|ctr|runc|kubelet) v=$(first_line "$b" --version) ;;
    esac
    echo "found=$b"
    [ -n "$v" ] && echo "version.$b=$v"
  fi
done

echo "@@timesync"
for p in /proc/[0-9]*/comm; do
  read -r c < "$p" || continue
  case "$c" in
    chronyd|systemd-timesyn|ntpd|openntpd|timesyncd) echo "process=$c" ;;
  esac
done | sort -u
if have timedatectl; then
  if have timeout; then
    s=$(timeout 5 timedatectl show -p NTPSynchronized --value 2>/dev/null | head -n 1)
  else
    s=$(timedatectl show -p NTPSynchronized --value 2>/dev/null | head -n 1)
  fi
  case "$s" in
    yes|no) echo "ntp_synchronized=$s" ;;
    *) finding "timedatectl present but NTPSynchronized unknown" ;;
  esac
fi

echo "@@end"
