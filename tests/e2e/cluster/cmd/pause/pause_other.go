//go:build !linux

package main

import "errors"

func run() error {
	return errors.New("unsupported: the pod sandbox process runs only on Linux")
}
