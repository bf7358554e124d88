package keyring

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// keyType is the kernel key type: a "user" key holds an opaque payload
// that user space can read back.
const keyType = "user"

// perm grants a possessor every right (view, read, write, search, link,
// setattr) and other processes of the owner only view.
const perm = 0x3f010000

// ErrWrongSize means a key with the name exists but holds a payload of
// another size, so it is not one this package created.
var ErrWrongSize = errors.New("key in the kernel keyring has the wrong size")

// LoadOrCreate returns the key named name from the user keyring, creating
// it with size random bytes when there is none. created reports which
// happened.
func LoadOrCreate(name string, size int) (key []byte, created bool, err error) {
	if name == "" || size <= 0 {
		return nil, false, fmt.Errorf("load key from kernel keyring: name %q or size %d is invalid", name, size)
	}

	if err := possessUserKeyring(); err != nil {
		return nil, false, err
	}
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, keyType, name, 0)
	switch {
	case err == nil:
		key, err := read(id, size)
		if err != nil {
			return nil, false, fmt.Errorf("load key %q from kernel keyring: %w", name, err)
		}
		return key, false, nil
	case !errors.Is(err, unix.ENOKEY) && !errors.Is(err, unix.EKEYEXPIRED) && !errors.Is(err, unix.EKEYREVOKED):
		return nil, false, fmt.Errorf("search kernel user keyring for %q: %w", name, err)
	}

	key = make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, false, fmt.Errorf("generate key %q: %w", name, err)
	}
	id, err = unix.AddKey(keyType, name, key, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		return nil, false, fmt.Errorf("add key %q to kernel user keyring: %w", name, err)
	}
	if err := unix.KeyctlSetperm(id, perm); err != nil {
		return nil, false, fmt.Errorf("set permissions of key %q: %w", name, err)
	}
	// Read back what the keyring holds: when another process added the
	// same name at the same moment, both must use the key that stayed.
	stored, err := read(id, size)
	if err != nil {
		return nil, false, fmt.Errorf("read back key %q: %w", name, err)
	}
	return stored, true, nil
}

// possessUserKeyring links the user keyring into the session keyring, as
// pam_keyinit does. Keys are possessed only through the caller's thread,
// process and session keyrings, and a container runtime such as runc gives
// each container a new session keyring that does not link @u. Without the
// link a restarted daemon could see its key but neither read it nor set
// its permissions.
func possessUserKeyring() error {
	if _, err := unix.KeyctlInt(unix.KEYCTL_LINK, unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING, 0, 0); err != nil {
		return fmt.Errorf("link the user keyring into the session keyring: %w", err)
	}
	return nil
}

// Remove unlinks the key named name from the user keyring and invalidates
// it. A missing key is not an error.
func Remove(name string) error {
	if err := possessUserKeyring(); err != nil {
		return err
	}
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, keyType, name, 0)
	if errors.Is(err, unix.ENOKEY) || errors.Is(err, unix.EKEYEXPIRED) || errors.Is(err, unix.EKEYREVOKED) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("search kernel user keyring for %q: %w", name, err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0); err != nil {
		return fmt.Errorf("invalidate key %q: %w", name, err)
	}
	return nil
}

func read(id, size int) ([]byte, error) {
	buf := make([]byte, size+1)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	if err != nil {
		return nil, fmt.Errorf("read key %d: %w", id, err)
	}
	if n != size {
		clear(buf)
		return nil, fmt.Errorf("%w: %d bytes, want %d: remove it (keyctl unlink) if it is not Phantom's", ErrWrongSize, n, size)
	}
	return buf[:size], nil
}
