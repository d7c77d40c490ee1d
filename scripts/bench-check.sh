#!/usr/bin/env bash
# Benchmark `kubedrill check` (SSH facts gathering) against an OpenSSH baseline on N local sshd
# hosts, N in {10, 50, 100} by default.
#
#   scripts/bench-check.sh [N...]
#
# Needs root (sshd), openssh-server and openssh-client; /usr/bin/time (Debian package `time`)
# for kubedrill's peak RSS. Uses only loopback addresses: host i listens on
# 127.1.(i/200).(10+i%200), port $BENCH_PORT (default 2222; every host has its own address).
#
# One lab of max(N) sshd hosts is started (own host keys and configs under a temp directory,
# MaxStartups 1000:30:1000, LogLevel ERROR, the client key in an authorized_keys file of the lab,
# so ~/.ssh is never touched); each case N uses the first N hosts through its own inventory and
# known_hosts. Idle sshd listeners cost nothing, so this equals starting N hosts per case.
# On exit (also on error or Ctrl-C) every sshd the script started, and every process those
# forked, is killed by PID, and the temp directory is removed.
#
# Per case, after one unrecorded warm-up of each side, $BENCH_RUNS (default 3, at least 3)
# alternating runs of:
#   (a) kubedrill: $KUBEDRILL check -i INV --known-hosts KH --output json > /dev/null; wall time
#       from `date +%s.%N` around it (ms resolution; /usr/bin/time's %e has only 10 ms), peak
#       RSS from /usr/bin/time -f '%M' (KiB). Skipped, with a message, if the binary is missing
#       or has no `check` command.
#   (b) baseline:  for every host in parallel
#         ssh -o BatchMode=yes -o KexAlgorithms=curve25519-sha256 -o UserKnownHostsFile=KH
#             -o StrictHostKeyChecking=yes -i KEY -p PORT root@ADDR sh -s < FACTS > out.I &
#       then wait; wall time from before the first fork to after the last exit.
# FACTS is src/facts/gather.sh, or (if absent) a stand-in: uname -r; cat /proc/cpuinfo | wc -l;
# ls /sys/class/net.
#
# Prints N, medians of (a) and (b) wall time, (a)/(b), (a)'s peak RSS in MiB, and CPU seconds:
# (a)'s own, the baseline's ssh clients' (bash `times`), and the sshd side's during a baseline
# run (listeners' utime+stime+cutime+cstime from /proc; on a small machine sshd's per-login cost
# bounds how fast any client can be). Writes the table plus every run to $BENCH_OUT (default
# target/bench-check.txt).
#
# Environment: KUBEDRILL (default ${CARGO_TARGET_DIR:-target}/release/kubedrill), BENCH_RUNS,
# BENCH_PORT, BENCH_OUT, BENCH_KEEP=1 (keep the lab directory for inspection),
# BENCH_ROOT_BASHRC=1 (let bash source root's ~/.bashrc on every login; see SETENV below).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(10 50 100)
for n in "${NS[@]}"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 10000 ] || {
        echo "usage: $0 [N...]  (host counts, 1..10000)" >&2
        exit 2
    }
done
RUNS=${BENCH_RUNS:-3}
[ "$RUNS" -ge 3 ] || RUNS=3
PORT=${BENCH_PORT:-2222}
KUBEDRILL=${KUBEDRILL:-${CARGO_TARGET_DIR:-target}/release/kubedrill}
OUT=${BENCH_OUT:-target/bench-check.txt}
SSHD=/usr/sbin/sshd

[ "$(id -u)" = 0 ] || { echo "bench-check: must run as root (sshd)" >&2; exit 1; }
[ -x $SSHD ] || { echo "bench-check: $SSHD missing (apt-get install openssh-server)" >&2; exit 1; }
command -v ssh >/dev/null || { echo "bench-check: ssh missing (openssh-client)" >&2; exit 1; }

# 100+ parallel ssh clients, their pipes and the sshd connections need descriptors.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
    ulimit -n 4096 || echo "bench-check: warning: cannot raise the descriptor limit to 4096" >&2
fi

TIME=/usr/bin/time
if [ ! -x $TIME ]; then
    echo "bench-check: /usr/bin/time missing (apt-get install time): kubedrill RSS will be n/a" >&2
    TIME=
fi

# Debian's bash sources ~/.bashrc for `ssh host CMD` when SHLVL < 2; a heavy root .bashrc (this
# build box's runs `pyenv init`: ~90 ms CPU per login) would then dominate both sides. sshd's
# SetEnv SHLVL=1 makes bash skip it, as on a node with a plain root account.
# BENCH_ROOT_BASHRC=1 keeps it.
SETENV="SetEnv SHLVL=1"
SETENV_NOTE="sshd: SetEnv SHLVL=1 (root's ~/.bashrc is not sourced for ssh commands)"
if [ "${BENCH_ROOT_BASHRC:-0}" = 1 ]; then
    SETENV=""
    SETENV_NOTE="sshd: root's ~/.bashrc is sourced for every ssh command (BENCH_ROOT_BASHRC=1)"
fi

MAXN=0
for n in "${NS[@]}"; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done

LAB=$(mktemp -d /tmp/kubedrill-bench-XXXXXX)
chmod 755 "$LAB"
LISTENERS=()

# Kill the listeners and everything they forked, by PID. The tree is read while the listeners
# are stopped, so no new connection process can appear in between.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ ${#LISTENERS[@]} -gt 0 ]; then
        kill -STOP "${LISTENERS[@]}" 2>/dev/null || true
        local tree
        tree=$(ps -e -o pid=,ppid= | awk -v roots="${LISTENERS[*]}" '
            BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) want[r[i]] = 1 }
            { parent[$1] = $2; pids[NR] = $1 }
            END {
                do {
                    changed = 0
                    for (i in pids) { p = pids[i]
                        if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1 } }
                } while (changed)
                for (p in want) print p
            }')
        # shellcheck disable=SC2086
        kill -KILL $tree 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench-check: lab kept in $LAB" >&2
    else
        rm -rf "$LAB"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Floating-point arithmetic without bc.
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

addr() { echo "127.1.$(($1 / 200)).$((10 + $1 % 200))"; }

echo "bench-check: starting $MAXN sshd hosts in $LAB" >&2
T0=$(date +%s.%N)
mkdir -p /run/sshd "$LAB/hosts"
ssh-keygen -q -t ed25519 -N '' -C kubedrill-bench -f "$LAB/id_ed25519"
cp "$LAB/id_ed25519.pub" "$LAB/authorized_keys"
chmod 644 "$LAB/authorized_keys"

for ((i = 0; i < MAXN; i++)); do
    mkdir -p "$LAB/hosts/h$i"
    ssh-keygen -q -t ed25519 -N '' -C kubedrill-bench -f "$LAB/hosts/h$i/key" &
    if (((i + 1) % 32 == 0)); then wait; fi
done
wait

for ((i = 0; i < MAXN; i++)); do
    d=$LAB/hosts/h$i
    cat >"$d/sshd_config" <<EOF
ListenAddress $(addr $i):$PORT
HostKey $d/key
PidFile $d/sshd.pid
AuthorizedKeysFile $LAB/authorized_keys
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
MaxStartups 1000:30:1000
MaxSessions 20
LoginGraceTime 30
LogLevel ERROR
Subsystem sftp internal-sftp
ClientAliveInterval 0
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
$SETENV
EOF
    $SSHD -D -e -f "$d/sshd_config" </dev/null >/dev/null 2>"$d/sshd.log" &
    LISTENERS+=($!)
done

# Ready: PID file written (sshd does so after listening) and the port accepts TCP.
deadline=$(($(date +%s) + 20 + MAXN / 10))
for ((i = 0; i < MAXN; i++)); do
    d=$LAB/hosts/h$i
    until [ -s "$d/sshd.pid" ] && (exec 3<>"/dev/tcp/$(addr $i)/$PORT") 2>/dev/null; do
        if ! kill -0 "${LISTENERS[$i]}" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
            echo "bench-check: sshd for host $i ($(addr $i):$PORT) did not start; log:" >&2
            cat "$d/sshd.log" >&2
            exit 1
        fi
        sleep 0.02
    done
done
echo "bench-check: $MAXN hosts up in $(calc "$(date +%s.%N) - $T0")s" >&2

# Per-N inventory and known_hosts (first N hosts).
write_case() {
    local n=$1 dir=$LAB/case-$1 i a
    mkdir -p "$dir"
    : >"$dir/known_hosts"
    {
        echo "# bench-check: $n local sshd hosts"
        echo "all:"
        echo "  vars:"
        echo "    kubedrill_known_hosts: \"$dir/known_hosts\""
        echo "  hosts:"
        for ((i = 0; i < n; i++)); do
            a=$(addr $i)
            echo "    node$((i + 1)):"
            echo "      ansible_host: $a"
            echo "      ansible_port: $PORT"
            echo "      ansible_user: root"
            echo "      ansible_ssh_private_key_file: \"$LAB/id_ed25519\""
            echo "      ip: $a"
            echo "[$a]:$PORT $(cut -d' ' -f1,2 "$LAB/hosts/h$i/key.pub")" >>"$dir/known_hosts"
        done
        echo "  children:"
        echo "    kube_control_plane:"
        echo "      hosts:"
        echo "        node1:"
        echo "    kube_node:"
        echo "      hosts:"
        if [ "$n" -eq 1 ]; then echo "        node1:"; fi
        for ((i = 1; i < n; i++)); do echo "        node$((i + 1)):"; done
        echo "    etcd:"
        echo "      hosts:"
        echo "        node1:"
        echo "    k8s_cluster:"
        echo "      children:"
        echo "        kube_control_plane:"
        echo "        kube_node:"
    } >"$dir/hosts.yaml"
}

FACTS=$REPO/src/facts/gather.sh
FACTS_NOTE="facts script: src/facts/gather.sh"
if [ ! -f "$FACTS" ]; then
    FACTS=$LAB/facts-standin.sh
    printf '%s\n' 'uname -r' 'cat /proc/cpuinfo | wc -l' 'ls /sys/class/net' >"$FACTS"
    FACTS_NOTE="facts script: src/facts/gather.sh is absent; baseline used a stand-in (uname -r; cat /proc/cpuinfo | wc -l; ls /sys/class/net)"
fi
echo "bench-check: $FACTS_NOTE" >&2

HAVE_KD=1
KD_NOTE="kubedrill: $KUBEDRILL check"
if [ ! -x "$KUBEDRILL" ]; then
    HAVE_KD=0
    KD_NOTE="kubedrill: skipped, $KUBEDRILL does not exist (cargo build --release)"
elif ! "$KUBEDRILL" check --help >/dev/null 2>&1; then
    HAVE_KD=0
    KD_NOTE="kubedrill: skipped, $KUBEDRILL has no \`check\` command yet"
fi
echo "bench-check: $KD_NOTE" >&2

# CPU seconds the first N sshd listeners and every connection process they reaped have used:
# utime+stime+cutime+cstime of /proc/PID/stat (each [priv] process reaps its session child, the
# listener reaps [priv], so a finished connection's server CPU ends up in the listener's cutime).
sshd_cpu() {
    local n=$1
    # shellcheck disable=SC2046
    awk -v tck="$CLK_TCK" '{ t += $14 + $15 + $16 + $17 } END { printf "%.3f", t / tck }' \
        $(printf '/proc/%s/stat ' "${LISTENERS[@]:0:$n}")
}
CLK_TCK=$(getconf CLK_TCK)

# (a) One kubedrill run: prints "WALL_S RSS_KIB CPU_S SSHD_CPU_S" (n/a without /usr/bin/time).
run_kubedrill() {
    local n=$1 dir=$LAB/case-$1 t0 t1 s0 s1 rss=n/a cpu=n/a
    s0=$(sshd_cpu "$n")
    t0=$(date +%s.%N)
    local rc=0 checked
    ${TIME:+$TIME -f '%M %U %S' -o "$dir/time.txt"} "$KUBEDRILL" check -i "$dir/hosts.yaml" \
        --known-hosts "$dir/known_hosts" --output json >"$dir/kd.json" 2>"$dir/kd.err" || rc=$?
    t1=$(date +%s.%N)
    # Exit 3 means "a requested Cilium feature is blocked by a node's kernel": the check itself
    # worked (this machine's kernel lacks some options). Every host must have been checked.
    checked=$(grep -c '"status": "checked"' "$dir/kd.json" || true)
    if { [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; } || [ "$checked" -ne "$n" ]; then
        echo "bench-check: kubedrill check failed for N=$n (exit $rc, $checked/$n hosts checked):" >&2
        tail -20 "$dir/kd.err" >&2
        return 1
    fi
    s1=$(sshd_cpu "$n")
    if [ -n "$TIME" ]; then
        read -r rss u s < <(tail -1 "$dir/time.txt")
        cpu=$(calc "$u + $s")
    fi
    echo "$(calc "$t1 - $t0") $rss $cpu $(calc "$s1 - $s0")"
}

# (b) One baseline run: prints "WALL_S FAILED_HOSTS CLIENT_CPU_S SSHD_CPU_S".
run_baseline() {
    local n=$1 dir=$LAB/case-$1 i t0 t1 s0 s1 failed=0 client
    local -a pids=()
    rm -rf "$dir/out"
    mkdir -p "$dir/out"
    s0=$(sshd_cpu "$n")
    t0=$(date +%s.%N)
    for ((i = 0; i < n; i++)); do
        ssh -F /dev/null -o BatchMode=yes -o KexAlgorithms=curve25519-sha256 \
            -o UserKnownHostsFile="$dir/known_hosts" -o StrictHostKeyChecking=yes \
            -i "$LAB/id_ed25519" -p "$PORT" "root@$(addr $i)" sh -s \
            <"$FACTS" >"$dir/out/$i" 2>"$dir/out/$i.err" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed=$((failed + 1))
    done
    t1=$(date +%s.%N)
    s1=$(sshd_cpu "$n")
    # This function runs in a subshell of its own: `times` line 2 is the CPU of its children,
    # i.e. the ssh clients. (Into a file: in a pipe, `times` would run in a fresh subshell.)
    times >"$dir/times.txt"
    client=$(awk 'NR == 2 {
        split($1, u, /m|s/); split($2, s, /m|s/); printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$dir/times.txt")
    if [ "$failed" -gt 0 ]; then
        echo "bench-check: baseline N=$n: $failed host(s) failed, e.g.:" >&2
        cat "$(ls "$dir"/out/*.err | head -1)" >&2
    fi
    echo "$(calc "$t1 - $t0") $failed $client $(calc "$s1 - $s0")"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

mkdir -p "$(dirname "$OUT")"
DETAILS=$LAB/details.txt
: >"$DETAILS"
ROWS=()
for n in "${NS[@]}"; do
    write_case "$n"
    echo "bench-check: N=$n: warm-up, then $RUNS runs" >&2
    kd_walls=() kd_rss=() kd_cpu=() bl_walls=() bl_cpu=() bl_srv=() kd_ok=$HAVE_KD
    if [ "$kd_ok" = 1 ] && ! run_kubedrill "$n" >/dev/null; then kd_ok=0; fi
    run_baseline "$n" >/dev/null
    for ((r = 1; r <= RUNS; r++)); do
        if [ "$kd_ok" = 1 ]; then
            if res=$(run_kubedrill "$n"); then
                read -r w m c sv <<<"$res"
                kd_walls+=("$w") kd_rss+=("$m") kd_cpu+=("$c")
                echo "N=$n run=$r kubedrill wall_s=$w peak_rss_kib=$m cpu_s=$c sshd_cpu_s=$sv" >>"$DETAILS"
            else
                kd_ok=0
                echo "N=$n run=$r kubedrill FAILED" >>"$DETAILS"
            fi
        fi
        read -r w f c sv < <(run_baseline "$n")
        bl_walls+=("$w") bl_cpu+=("$c") bl_srv+=("$sv")
        echo "N=$n run=$r baseline wall_s=$w failed_hosts=$f client_cpu_s=$c sshd_cpu_s=$sv" >>"$DETAILS"
        if [ "$f" != 0 ]; then
            echo "bench-check: baseline had failures; its times are not comparable" >&2
        fi
    done
    bl=$(printf '%s\n' "${bl_walls[@]}" | median)
    blc=$(printf '%s\n' "${bl_cpu[@]}" | median)
    srv=$(printf '%s\n' "${bl_srv[@]}" | median)
    kd=- ratio=- rss=- kdc=-
    if [ "$kd_ok" = 1 ] && [ ${#kd_walls[@]} -gt 0 ]; then
        kd=$(printf '%s\n' "${kd_walls[@]}" | median)
        ratio=$(calc "$kd / $bl")
        if [ "${kd_rss[0]}" != n/a ]; then
            rss=$(printf '%s\n' "${kd_rss[@]}" | median)
            rss=$(awk "BEGIN { printf \"%.1f\", $rss / 1024 }")
            kdc=$(printf '%s\n' "${kd_cpu[@]}" | median)
        fi
    fi
    ROWS+=("$(printf '%-6s %-10s %-10s %-7s %-10s %-10s %-12s %s' "$n" "$kd" "$bl" "$ratio" "$rss" "$kdc" "$blc" "$srv")")
done

{
    echo "# scripts/bench-check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs, $RUNS runs per case (medians)"
    echo "# $KD_NOTE"
    echo "# $FACTS_NOTE"
    echo "# baseline: parallel OpenSSH clients (curve25519-sha256), one per host, then wait"
    echo "# $SETENV_NOTE"
    echo "# columns: wall seconds of kubedrill (kd) and of the baseline (bl), kd/bl, kd peak RSS,"
    echo "#   CPU seconds of kd, of the bl ssh clients, and of the sshd side during a bl run"
    printf '%-6s %-10s %-10s %-7s %-10s %-10s %-12s %s\n' N kd_wall_s bl_wall_s ratio kd_rss_MiB kd_cpu_s bl_client_cpu bl_sshd_cpu_s
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "# runs"
    cat "$DETAILS"
} | tee "$OUT"
echo "bench-check: results written to $OUT" >&2
