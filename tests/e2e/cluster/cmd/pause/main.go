// Command pause is the sandbox process of the end-to-end cluster's pods: it
// holds the pod's namespaces open and does nothing else. The cluster cannot
// pull registry.k8s.io/pause, so images.sh packages this program instead.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "pause: %v\n", err)
		os.Exit(1)
	}
}
