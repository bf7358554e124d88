package tmpfs

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		fmt.Println("privileged: tmpfs suite ran as root with real mounts")
	} else {
		fmt.Println("privileged: tmpfs suite skipped its mount tests (not root)")
	}
	os.Exit(m.Run())
}
