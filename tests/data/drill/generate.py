#!/usr/bin/env python3
"""Generate the recorded drill runs run-1.json and run-2.json (deterministic; seeded noise).

Both are a Cilium 1.17.18 -> 1.18.12 upgrade on the 3-node lab (cp1, node1, node2), probes at
20/s per pair, agent RSS/CPU sampled every 5 s. run-1 passes: a 1.8 s ICMP and a 0.4 s NodePort
loss window while node1's agent restarts. run-2 fails: the 1.18 agent on node2 leaks ~24 MiB/min,
3 pods of the burst fail on node2, kube-proxy comes back, and the release is rolled back.

Run: python3 tests/data/drill/generate.py   (writes next to this file)
"""
import datetime
import json
import math
import os
import random

MIB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
NODES = [
    {"name": "cp1", "role": "control-plane", "address": "192.168.122.10"},
    {"name": "node1", "role": "worker", "address": "192.168.122.11"},
    {"name": "node2", "role": "worker", "address": "192.168.122.12"},
]
RATE = 20


def ts(t0, s):
    t = t0 + datetime.timedelta(milliseconds=round(s * 1000))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def ep(name, node=None):
    return {"name": name, "node": node} if node else {"name": name}


PROBES = [
    ("icmp-pod-pod", ep("pod/probe-node2", "node2"), ep("pod/probe-node1", "node1")),
    ("icmp-pod-pod", ep("pod/probe-cp1", "cp1"), ep("pod/probe-node2", "node2")),
    ("tcp-pod", ep("pod/probe-cp1", "cp1"), ep("pod/echo-node2:8080", "node2")),
    ("tcp-clusterip", ep("pod/probe-node2", "node2"), ep("svc/echo 10.233.0.80:80")),
    ("tcp-nodeport", ep("host/lab-client"), ep("192.168.122.11:30080 (backend on node2, DSR)", "node1")),
    ("udp-pod", ep("pod/probe-node1", "node1"), ep("pod/echo-cp1:5353", "cp1")),
    ("icmp-host", ep("host/cp1", "cp1"), ep("host/node2", "node2")),
]

VALUES_DIFF_BODY = [
    ' upgradeCompatibility: "1.16"',
    " kubeProxyReplacement: true",
    " k8sServiceHost: 192.168.122.10",
    " k8sServicePort: 6443",
    " routingMode: native",
    " ipv4NativeRoutingCIDR: 10.233.64.0/18",
    " autoDirectNodeRoutes: true",
    " bpf:",
    "   masquerade: true",
    " loadBalancer:",
    "   mode: dsr",
    "+  dsrDispatch: opt",
    "   algorithm: maglev",
    "   acceleration: native",
    " maglev:",
    "   tableSize: 16381",
    "   hashSeed: a3ViZWRyaWxsLWxi",
    " image:",
    "-  tag: v1.17.18",
    "+  tag: v1.18.12",
    " operator:",
    "   image:",
    "-    tag: v1.17.18",
    "+    tag: v1.18.12",
]


def values_diff():
    old = sum(1 for l in VALUES_DIFF_BODY if not l.startswith("+"))
    new = sum(1 for l in VALUES_DIFF_BODY if not l.startswith("-"))
    return [
        "--- helm get values cilium (revision 1, chart 1.17.18)",
        "+++ values for chart 1.18.12",
        f"@@ -1,{old} +1,{new} @@",
    ] + VALUES_DIFF_BODY


POLICY = {
    "max_interruption_ms": {
        "icmp-pod-pod": 2000,
        "tcp-pod": 1000,
        "tcp-clusterip": 1000,
        "tcp-nodeport": 1000,
        "udp-pod": 2000,
        "icmp-host": 2000,
    },
    "max_loss_ratio": 0.01,
    "max_container_restarts": 0,
    "max_pod_burst_failures": 0,
    "leak": {
        "min_slope_bytes_per_min": 1048576.0,
        "min_relative_growth": 0.1,
        "min_samples": 6,
        "min_span_ms": 60000,
        "segments": 4,
        "memory_limit_bytes": 2147483648,
    },
}

DATAPATH = {"kube_proxy_replacement": True, "dsr": True, "maglev": True, "xdp": "native"}


def build(run):
    rnd = random.Random(run["seed"])
    t0 = run["t0"]
    T = lambda s: ts(t0, s)
    end = run["end"]
    rec = {
        "schema": 1,
        "drill": {"name": "cilium-1.17-to-1.18", "run_id": run["run_id"]},
        "lab": "lab-3node",
        "started": T(0),
        "ended": T(end),
        "cilium": {"from": "1.17.18", "to": "1.18.12"},
        "nodes": NODES,
        "phases": [
            {"name": n, "start": T(a), "end": T(b), "outcome": o} for (n, a, b, o) in run["phases"]
        ],
        "soak": {"start": T(run["soak"][0]), "end": T(run["soak"][1])},
    }
    # Probes and loss windows.
    p_start, p_end = 2.0, run["probes_end"]
    sent = int(round((p_end - p_start) * RATE))
    windows = []
    lost = [0] * len(PROBES)
    for (i, a, dur) in run["windows"]:
        kind, frm, to = PROBES[i]
        n = int(round(dur * RATE))
        lost[i] += n
        windows.append({
            "kind": kind, "from": frm, "to": to, "start": T(a), "end": T(a + dur),
            "duration_ms": int(round(dur * 1000)), "lost": n,
        })
    rec["probes"] = [
        {"kind": k, "from": f, "to": t, "rate_per_s": RATE, "sent": sent, "lost": lost[i]}
        for i, (k, f, t) in enumerate(PROBES)
    ]
    rec["loss_windows"] = windows
    # Agent events.
    events = []
    for node, nr, rs, rd in run["restarts"]:
        events.append({"node": node, "at": T(nr), "kind": "not-ready", "restart_count": 0})
        events.append({"node": node, "at": T(rs), "kind": "restart", "restart_count": 0})
        events.append({"node": node, "at": T(rd), "kind": "ready", "restart_count": 0})
    events.sort(key=lambda e: (e["at"], e["node"]))
    rec["agent_events"] = events
    # Resources.
    base_rss = {"cp1": 196, "node1": 178, "node2": 181}
    steady = {"cp1": 188, "node1": 170, "node2": 173}
    base_cpu = {"cp1": 46, "node1": 35, "node2": 38}
    resources = []
    for nd in NODES:
        name = nd["name"]
        rs = [(nr, r, rd) for (n, nr, r, rd) in run["restarts"] if n == name]
        samples = []
        t = 0.5
        while t <= end:
            gone = any(nr < t < r + 1.0 for (nr, r, _) in rs)
            if not gone:
                last = max([r for (_, r, _) in rs if r <= t], default=None)
                if last is None:
                    rss = base_rss[name]
                else:
                    rss = steady[name] - (steady[name] - 95) * math.exp(-(t - last) / 15.0)
                    leak = run.get("leak")
                    if leak and leak[0] == name and leak[1] <= last < leak[2]:
                        rss += leak[3] * (t - last) / 60.0
                rss += rnd.gauss(0, 0.8)
                cpu = base_cpu[name] + rnd.gauss(0, 6)
                if last is not None:
                    cpu += 700 * math.exp(-(t - last) / 8.0)
                pre = run["phases"][1]
                if pre[1] <= t <= pre[2]:
                    cpu += 30
                burst = run["burst"]
                if burst[0] <= t <= burst[1]:
                    cpu += 120 if name == "cp1" else 220
                samples.append({
                    "at": T(t),
                    "cpu_millicores": max(1, int(round(cpu))),
                    "rss_bytes": int(round(rss * MIB)),
                })
            t += 5.0
        resources.append({"node": name, "samples": samples})
    rec["resources"] = resources
    rec["pod_burst"] = {
        "start": T(run["burst"][0]),
        "end": T(run["burst"][1]),
        "nodes": run["burst_nodes"],
    }
    rec["helm_events"] = run["helm"](T)
    rec["kube_proxy_events"] = run.get("kube_proxy", lambda T: [])(T)
    rec["values_diff"] = values_diff()
    rec["verification"] = [
        {"node": n["name"], "before": DATAPATH, "after": DATAPATH} for n in NODES
    ]
    rec["policy"] = POLICY
    rec["verdict"] = run["verdict"]
    return rec


RUN1 = {
    "seed": 1,
    "run_id": "cilium-1.17-to-1.18-20261120T090000Z",
    "t0": datetime.datetime(2026, 11, 20, 9, 0, 0),
    "end": 360.8,
    "phases": [
        ("preflight/checks", 0.0, 6.412, "ok"),
        ("cilium/preflight", 6.412, 48.93, "ok"),
        ("values/migrate", 48.93, 50.215, "ok"),
        ("cilium/upgrade", 50.215, 57.804, "ok"),
        ("cilium/rollout", 57.804, 176.31, "ok"),
        ("verify/datapath", 176.31, 190.122, "ok"),
        ("pod-burst", 190.122, 232.505, "ok"),
        ("soak", 232.505, 352.505, "ok"),
        ("report/collect", 352.505, 360.8, "ok"),
    ],
    "soak": (232.505, 352.505),
    "probes_end": 352.0,
    "windows": [(0, 97.35, 1.8), (4, 97.9, 0.4)],
    "restarts": [
        ("cp1", 59.12, 61.48, 83.95),
        ("node1", 85.21, 87.6, 112.74),
        ("node2", 114.05, 116.33, 141.87),
    ],
    "burst": (190.122, 232.505),
    "burst_nodes": [
        {"node": "cp1", "created": 20, "failed": 0},
        {"node": "node1", "created": 40, "failed": 0},
        {"node": "node2", "created": 40, "failed": 0},
    ],
    "helm": lambda T: [
        {"action": "upgrade", "at": T(50.61), "revision": 2, "chart_version": "1.18.12"}
    ],
    "verdict": {
        "outcome": "pass",
        "reasons": ["longest interruption 1.80 s (icmp-pod-pod node2 → node1) is within the 2.00 s limit"],
    },
}

RUN2 = {
    "seed": 2,
    "run_id": "cilium-1.17-to-1.18-20261121T143000Z",
    "t0": datetime.datetime(2026, 11, 21, 14, 30, 0),
    "end": 446.2,
    "phases": [
        ("preflight/checks", 0.0, 6.2, "ok"),
        ("cilium/preflight", 6.2, 47.6, "ok"),
        ("values/migrate", 47.6, 48.9, "ok"),
        ("cilium/upgrade", 48.9, 56.4, "rolled-back"),
        ("cilium/rollout", 56.4, 175.0, "rolled-back"),
        ("verify/datapath", 175.0, 188.7, "ok"),
        ("pod-burst", 188.7, 231.9, "failed"),
        ("soak", 231.9, 321.9, "failed"),
        ("cilium/rollback", 321.9, 440.5, "ok"),
        ("report/collect", 440.5, 446.2, "ok"),
    ],
    "soak": (231.9, 321.9),
    "probes_end": 438.0,
    "windows": [(0, 98.9, 1.8), (4, 99.5, 0.4), (0, 363.2, 1.6)],
    "restarts": [
        ("cp1", 58.3, 60.6, 82.9),
        ("node1", 84.4, 86.8, 111.6),
        ("node2", 113.1, 117.5, 143.2),
        ("cp1", 324.8, 327.0, 348.6),
        ("node1", 350.1, 352.4, 377.9),
        ("node2", 379.3, 381.6, 406.2),
    ],
    # node2's 1.18 agent leaks 24 MiB/min from its start until the rollback replaces it.
    "leak": ("node2", 100.0, 300.0, 24.0),
    "burst": (188.7, 231.9),
    "burst_nodes": [
        {"node": "cp1", "created": 20, "failed": 0},
        {"node": "node1", "created": 40, "failed": 0},
        {
            "node": "node2",
            "created": 37,
            "failed": 3,
            "errors": [
                'Failed to create pod sandbox: plugin type="cilium-cni" failed (add): '
                "unable to create endpoint: Cilium API client timeout exceeded"
            ],
        },
    ],
    "helm": lambda T: [
        {"action": "upgrade", "at": T(49.3), "revision": 2, "chart_version": "1.18.12"},
        {"action": "rollback", "at": T(322.4), "revision": 3, "to_revision": 1},
    ],
    "kube_proxy": lambda T: [
        {
            "at": T(183.4),
            "node": "cp1",
            "detail": "pod kube-system/kube-proxy-7xk2p Running (DaemonSet kube-proxy re-created)",
        }
    ],
    "verdict": {
        "outcome": "fail",
        "reasons": [
            "pod burst: 3 of 40 pods failed on node2 (allowed: 0)",
            "agent memory on node2 grew 24.0 MiB/min in the soak (+16 %); "
            "it would reach the 2 GiB limit in about 75 min",
            "kube-proxy came back: kube-system/kube-proxy-7xk2p on cp1",
            "rolled back: helm rollback cilium 1 (revision 3, Cilium 1.17.18)",
        ],
    },
}

for name, run in [("run-1", RUN1), ("run-2", RUN2)]:
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(build(run), f, indent=2, ensure_ascii=False)
        f.write("\n")
