package keyring

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a separate process that loads the
// key, as a restarted daemon would.
const helperEnv = "PHANTOM_KEYRING_TEST_HELPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	os.Exit(m.Run())
}

// runHelper joins a new session keyring, as runc does for each new
// container, then loads the key and prints whether it was created and its
// SHA-256.
func runHelper(name string) int {
	if _, err := unix.KeyctlJoinSessionKeyring("_ses.phantom-test-" + rand.Text()[:8]); err != nil {
		fmt.Fprintln(os.Stderr, "join session keyring:", err)
		return 1
	}
	key, created, err := LoadOrCreate(name, 32)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sum := sha256.Sum256(key)
	fmt.Printf("created=%v sum=%s\n", created, hex.EncodeToString(sum[:]))
	return 0
}

func testKeyName(t *testing.T) string {
	t.Helper()
	if _, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, false); err != nil {
		t.Skipf("no kernel user keyring: %v", err)
	}
	name := "phantom-test:" + strings.ReplaceAll(t.Name(), "/", "-") + ":" + rand.Text()[:8]
	t.Cleanup(func() {
		if err := Remove(name); err != nil {
			t.Errorf("remove test key: %v", err)
		}
	})
	return name
}

func TestLoadOrCreateReturnsSameKey(t *testing.T) {
	name := testKeyName(t)

	first, created, err := LoadOrCreate(name, 32)
	if err != nil {
		t.Fatalf("LoadOrCreate() = %v", err)
	}
	if !created || len(first) != 32 {
		t.Fatalf("first LoadOrCreate: created=%v len=%d, want true 32", created, len(first))
	}
	second, created, err := LoadOrCreate(name, 32)
	if err != nil {
		t.Fatalf("second LoadOrCreate() = %v", err)
	}
	if created || !bytes.Equal(first, second) {
		t.Errorf("second LoadOrCreate: created=%v, same key=%v; want false, true", created, bytes.Equal(first, second))
	}
}

// TestKeySurvivesProcessRestart creates the key in one process and loads it
// in another, each with a session keyring of its own.
func TestKeySurvivesProcessRestart(t *testing.T) {
	name := testKeyName(t)

	run := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+name)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper process: %v (stderr: %s)", err, exitStderr(err))
		}
		return strings.TrimSpace(string(out))
	}
	first, second := run(), run()

	if !strings.HasPrefix(first, "created=true ") {
		t.Errorf("first process: %q, want it to create the key", first)
	}
	if !strings.HasPrefix(second, "created=false ") {
		t.Errorf("second process: %q, want it to find the key", second)
	}
	if strings.TrimPrefix(first, "created=true ") != strings.TrimPrefix(second, "created=false ") {
		t.Errorf("processes saw different keys: %q and %q", first, second)
	}

	// This process sees the same key too.
	key, created, err := LoadOrCreate(name, 32)
	if err != nil || created {
		t.Fatalf("LoadOrCreate() in the test process = created %v, %v", created, err)
	}
	sum := sha256.Sum256(key)
	if want := "created=false sum=" + hex.EncodeToString(sum[:]); second != want {
		t.Errorf("test process key differs from the helpers': %q vs %q", want, second)
	}
}

func TestLoadOrCreateRejectsForeignKey(t *testing.T) {
	name := testKeyName(t)
	if _, err := unix.AddKey("user", name, []byte("short"), unix.KEY_SPEC_USER_KEYRING); err != nil {
		t.Fatalf("add foreign key: %v", err)
	}

	_, _, err := LoadOrCreate(name, 32)
	if !errors.Is(err, ErrWrongSize) {
		t.Errorf("LoadOrCreate() over a 5-byte key = %v, want ErrWrongSize", err)
	}
}

func TestRemoveMissingKey(t *testing.T) {
	name := testKeyName(t)
	if err := Remove(name); err != nil {
		t.Errorf("Remove() of a missing key = %v, want nil", err)
	}
}

func TestLoadOrCreateRejectsBadArguments(t *testing.T) {
	t.Parallel()
	if _, _, err := LoadOrCreate("", 32); err == nil {
		t.Error("LoadOrCreate with an empty name succeeded")
	}
	if _, _, err := LoadOrCreate("x", 0); err == nil {
		t.Error("LoadOrCreate with size 0 succeeded")
	}
}

func exitStderr(err error) string {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return string(exitErr.Stderr)
	}
	return ""
}
