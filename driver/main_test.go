package driver

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		fmt.Println("privileged: driver suite ran as root with real tmpfs mounts")
	} else {
		fmt.Println("privileged: driver suite skipped its mount tests (not root)")
	}
	os.Exit(m.Run())
}
