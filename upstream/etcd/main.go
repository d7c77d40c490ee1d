// kubedrill's etcd entry point: the same server as the etcd release binary, started from
// upstream's etcdmain package (go.etcd.io/etcd/server/v3 at the version kubeadm expects).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
