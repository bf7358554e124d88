package driver

import (
	"fmt"
	"os"
	"testing"
)

// binDir holds the phantom-node binary that the daemon tests build on first
// use; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		fmt.Println("privileged: driver suite ran as root with real tmpfs mounts")
	} else {
		fmt.Println("privileged: driver suite skipped its mount tests (not root)")
	}
	dir, err := os.MkdirTemp("", "phantom-node-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create binary directory:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
