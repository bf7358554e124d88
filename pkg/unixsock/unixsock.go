// Package unixsock listens on Unix sockets that a daemon re-creates at
// every start, such as a CSI endpoint, without ever removing a file that is
// not a stale socket.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ErrInUse means another process serves the socket.
var ErrInUse = errors.New("socket in use")

// ErrNotSocket means the path exists and is not a socket.
var ErrNotSocket = errors.New("path exists and is not a socket")

// Listen listens on a Unix socket at path, creating its directory. It
// replaces a socket left by an earlier run. A socket that another process
// still serves, or any other file at path, is an error: a second daemon
// never takes over a live socket, and no file is deleted by mistake.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create directory of socket %s: %w", path, err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	listener, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on socket %s: %w", path, err)
	}
	return listener, nil
}

func removeStale(path string) error {
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("check socket path %s: %w", path, err)
	case info.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%w: %s is a %s; remove it or choose another path", ErrNotSocket, path, describe(info.Mode()))
	}

	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%w: another process serves %s; stop it or choose another path", ErrInUse, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

func describe(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "directory"
	case mode&fs.ModeSymlink != 0:
		return "symbolic link"
	case mode.IsRegular():
		return "regular file"
	default:
		return "special file"
	}
}
