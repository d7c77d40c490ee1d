# kubedrill node facts (format 1). POSIX sh (dash-compatible); sent on stdin of `sh -s`.
# Read-only, no network, no root needed. Every probe is guarded: a missing tool or file is
# reported as a `finding=` line, never a failure. Output: a version line, then `@@section`
# headers followed by `key=value` lines (split at the first `=`), then `@@end`.
LC_ALL=C
export LC_ALL
# Tools such as ethtool and modinfo live in sbin, which a normal user's PATH may lack.
PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export PATH
exec 2>/dev/null

have() { command -v "$1" >/dev/null 2>&1; }
finding() { printf '%s\n' "finding=$*"; }
# First line of a command's standard output, with a time limit where `timeout` exists.
first_line() {
  if have timeout; then timeout 5 "$@" 2>/dev/null | head -n 1; else "$@" 2>/dev/null | head -n 1; fi
}

printf '%s\n' "kubedrill-facts 1"

printf '%s\n' "@@os"
if [ -r /etc/os-release ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      ID=*|VERSION_ID=*|ID_LIKE=*|PRETTY_NAME=*) printf '%s\n' "$line" ;;
    esac
  done < /etc/os-release
else
  finding "/etc/os-release not readable"
fi

printf '%s\n' "@@kernel"
printf '%s\n' "release=$(uname -r)"
printf '%s\n' "arch=$(uname -m)"

printf '%s\n' "@@kconfig"
KREL=$(uname -r)
KPAT='^(# )?CONFIG_(BPF|BPF_SYSCALL|BPF_JIT|NET_CLS_BPF|NET_CLS_ACT|NET_SCH_INGRESS|CRYPTO_SHA1|CRYPTO_USER_API_HASH|CGROUPS|CGROUP_BPF|PERF_EVENTS|SCHEDSTATS|XDP_SOCKETS|NET_SCH_FQ|VXLAN|GENEVE|FIB_RULES|NETKIT|WIREGUARD|DEBUG_INFO_BTF|NF_CONNTRACK|BPF_EVENTS|NET_ACT_BPF|NET_SCH_FQ_CODEL|IP_NF_IPTABLES|NETFILTER_XT_MATCH_SOCKET|NETFILTER_XT_TARGET_TPROXY|BPF_STREAM_PARSER|BPF_LSM|IPV6|TUN|VETH)( is not set|=)'
if [ -r /proc/config.gz ] && have zcat && zcat /proc/config.gz >/dev/null 2>&1; then
  printf '%s\n' "source=/proc/config.gz"
  zcat /proc/config.gz | grep -E "$KPAT"
elif [ -r /proc/config.gz ] && have gzip && gzip -dc /proc/config.gz >/dev/null 2>&1; then
  printf '%s\n' "source=/proc/config.gz"
  gzip -dc /proc/config.gz | grep -E "$KPAT"
elif [ -r "/boot/config-$KREL" ]; then
  printf '%s\n' "source=/boot/config-$KREL"
  grep -E "$KPAT" "/boot/config-$KREL"
else
  printf '%s\n' "source=none"
  finding "kernel config not readable (no /proc/config.gz, no /boot/config-$KREL)"
fi

printf '%s\n' "@@modules"
if [ -r /proc/modules ]; then
  printf '%s\n' "loaded_source=/proc/modules"
  while read -r name rest; do
    case "$name" in
      cls_bpf|act_bpf|sch_ingress|sch_fq|sch_fq_codel|vxlan|geneve|udp_tunnel|ip6_udp_tunnel|wireguard|nf_conntrack|xt_socket|xt_TPROXY|ip_tables|iptable_nat|iptable_mangle|iptable_raw|iptable_filter|sha1_generic|algif_hash|tun|veth|netkit|ipv6|br_netfilter|overlay)
        printf '%s\n' "loaded=$name" ;;
    esac
  done < /proc/modules
else
  finding "/proc/modules not readable (kernel without module support?)"
fi
MODS="cls_bpf act_bpf sch_ingress sch_fq sch_fq_codel vxlan geneve udp_tunnel ip6_udp_tunnel wireguard nf_conntrack xt_socket xt_TPROXY ip_tables iptable_nat iptable_mangle iptable_raw iptable_filter sha1_generic algif_hash tun veth netkit br_netfilter overlay"
DEP="/lib/modules/$KREL/modules.dep"
if [ -r "$DEP" ]; then
  printf '%s\n' "available_source=modules.dep"
  for m in $MODS; do
    m2=$(printf '%s\n' "$m" | tr _ -)
    if grep -q -E "/($m|$m2)\.ko(\.[a-z]+)?:" "$DEP"; then printf '%s\n' "available=$m"; fi
  done
elif have modinfo; then
  printf '%s\n' "available_source=modinfo"
  for m in $MODS; do
    if modinfo -n "$m" >/dev/null 2>&1; then printf '%s\n' "available=$m"; fi
  done
else
  printf '%s\n' "available_source=none"
  finding "cannot list available modules (no $DEP, no modinfo)"
fi

printf '%s\n' "@@system"
CG=""
if [ -r /proc/mounts ]; then
  while read -r dev mnt fstype rest; do
    if [ "$mnt" = "/sys/fs/cgroup" ]; then CG="$fstype"; fi
    if [ "$mnt" = "/sys/fs/cgroup/unified" ] && [ "$fstype" = "cgroup2" ]; then UNIFIED=1; fi
  done < /proc/mounts
fi
case "$CG" in
  cgroup2) printf '%s\n' "cgroup=v2" ;;
  tmpfs) if [ -n "$UNIFIED" ]; then printf '%s\n' "cgroup=hybrid"; else printf '%s\n' "cgroup=v1"; fi ;;
  *) printf '%s\n' "cgroup=unknown"; finding "no cgroup filesystem mounted on /sys/fs/cgroup" ;;
esac
if [ -r /proc/swaps ]; then
  SWN=0; SWT=0
  while read -r sname stype ssize rest; do
    case "$ssize" in
      ''|*[!0-9]*) ;;
      *) SWN=$((SWN + 1)); SWT=$((SWT + ssize)) ;;
    esac
  done < /proc/swaps
  printf '%s\n' "swap_devices=$SWN"
  printf '%s\n' "swap_total_kib=$SWT"
else
  finding "/proc/swaps not readable"
fi
if have nproc; then
  printf '%s\n' "cpus=$(nproc)"
elif [ -r /proc/cpuinfo ]; then
  printf '%s\n' "cpus=$(grep -c '^processor' /proc/cpuinfo)"
else
  finding "cannot count CPUs"
fi
if [ -r /proc/meminfo ]; then
  while read -r k v rest; do
    if [ "$k" = "MemTotal:" ]; then printf '%s\n' "mem_total_kib=$v"; fi
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
if [ -n "$DEFIF" ]; then printf '%s\n' "default_route_iface=$DEFIF"; else finding "no IPv4 default route"; fi
if have ethtool; then printf '%s\n' "ethtool=yes"; else printf '%s\n' "ethtool=no"; finding "ethtool not installed: NIC queue maxima and offloads unknown"; fi
if have ip; then printf '%s\n' "iproute2=yes"; else printf '%s\n' "iproute2=no"; finding "ip (iproute2) not installed: addresses and XDP attachment unknown"; fi

for d in /sys/class/net/*; do
  [ -e "$d" ] || continue
  n=${d##*/}
  [ "$n" = "lo" ] && continue
  printf '%s\n' "@@nic $n"
  if [ -e "$d/device" ]; then printf '%s\n' "virtual=no"; else printf '%s\n' "virtual=yes"; fi
  drv=""
  if [ -e "$d/device/driver" ]; then
    drv=$(readlink "$d/device/driver")
    drv=${drv##*/}
  fi
  if [ -z "$drv" ] && have ethtool; then
    drv=$(ethtool -i "$n" | sed -n 's/^driver: //p' | head -n 1)
  fi
  [ -n "$drv" ] && printf '%s\n' "driver=$drv"
  [ -r "$d/mtu" ] && printf '%s\n' "mtu=$(cat "$d/mtu")"
  [ -r "$d/operstate" ] && printf '%s\n' "operstate=$(cat "$d/operstate")"
  [ -r "$d/address" ] && printf '%s\n' "mac=$(cat "$d/address")"
  rx=0; tx=0
  for q in "$d"/queues/rx-*; do [ -e "$q" ] && rx=$((rx + 1)); done
  for q in "$d"/queues/tx-*; do [ -e "$q" ] && tx=$((tx + 1)); done
  printf '%s\n' "sysfs_rx_queues=$rx"
  printf '%s\n' "sysfs_tx_queues=$tx"
  # ethtool for physical NICs and the default-route NIC only (nodes can have hundreds of veths).
  if have ethtool && { [ -e "$d/device" ] || [ "$n" = "$DEFIF" ]; }; then
    ethtool -l "$n" | {
      set -f
      sect=""
      while IFS= read -r line; do
        case "$line" in
          Pre-set*) sect=max ;;
          Current*) sect=current ;;
          Combined:*) set -- $line; [ -n "$sect" ] && printf '%s\n' "combined_$sect=$2" ;;
        esac
      done
    }
    ethtool -k "$n" | while IFS= read -r line; do
      case "$line" in
        rx-gro-hw:*|rx-checksumming:*|tx-checksumming:*|tcp-segmentation-offload:*|generic-receive-offload:*|large-receive-offload:*|generic-segmentation-offload:*|rx-vlan-offload:*)
          printf '%s\n' "offload=$line" ;;
      esac
    done
  fi
done

printf '%s\n' "@@links"
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
    [ -n "$mode" ] && printf '%s\n' "xdp=$name $mode"
  done
  ip -o -4 addr show | while IFS= read -r line; do
    set -f
    set -- $line
    [ "$3" = "inet" ] && printf '%s\n' "addr=$2 $4"
  done
fi

printf '%s\n' "@@binaries"
for b in containerd ctr crictl runc kubeadm kubelet kubectl helm; do
  if have "$b"; then
    case "$b" in
      kubeadm) v=$(first_line kubeadm version -o short) ;;
      kubectl) v=$(first_line kubectl version --client) ;;
      helm) v=$(first_line helm version --short) ;;
      crictl|containerd|ctr|runc|kubelet) v=$(first_line "$b" --version) ;;
    esac
    printf '%s\n' "found=$b"
    [ -n "$v" ] && printf '%s\n' "version.$b=$v"
  fi
done

printf '%s\n' "@@timesync"
for p in /proc/[0-9]*/comm; do
  read -r c < "$p" || continue
  case "$c" in
    chronyd|systemd-timesyn|ntpd|openntpd|timesyncd) printf '%s\n' "process=$c" ;;
  esac
done | sort -u
if have timedatectl; then
  if have timeout; then
    s=$(timeout 5 timedatectl show -p NTPSynchronized --value 2>/dev/null | head -n 1)
  else
    s=$(timedatectl show -p NTPSynchronized --value 2>/dev/null | head -n 1)
  fi
  case "$s" in
    yes|no) printf '%s\n' "ntp_synchronized=$s" ;;
    *) finding "timedatectl present but NTPSynchronized unknown" ;;
  esac
fi

printf '%s\n' "@@end"
