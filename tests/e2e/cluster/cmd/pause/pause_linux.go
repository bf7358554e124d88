package main

import (
	"os"
	"os/signal"
	"syscall"
)

// run waits for SIGINT or SIGTERM and then returns. When the pod shares one
// process namespace, pause is its PID 1 and adopts orphaned processes, so it
// reaps every exited child on SIGCHLD to keep zombies from piling up.
func run() error {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)

	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return nil
		}
		reapChildren()
	}
	return nil
}

func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
