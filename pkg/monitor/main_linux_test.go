package monitor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the victim, attacker and crasher processes of
// the kernel tests: TestMain runs the helper named in helperEnv instead of
// the tests.
const (
	helperEnv = "PHANTOM_MONITOR_TEST_HELPER"
	canaryEnv = "PHANTOM_MONITOR_TEST_CANARY"
	attackEnv = "PHANTOM_MONITOR_TEST_ATTACK"
	pidEnv    = "PHANTOM_MONITOR_TEST_PID"
	addrEnv   = "PHANTOM_MONITOR_TEST_ADDR"
	fileEnv   = "PHANTOM_MONITOR_TEST_FILE"
	moveEnv   = "PHANTOM_MONITOR_TEST_MOVE_TO"
)

// Exit codes of the attacker helper.
const (
	exitSucceeded = 0  // the access worked and returned the canary
	exitDenied    = 10 // the kernel returned EPERM or EACCES
	exitFailed    = 11 // any other failure
	exitMismatch  = 12 // the access worked but returned other data
)

// suites records which kernel suites ran, for the summary line TestMain
// prints so that CI logs show what was skipped and why.
var suites = struct {
	sync.Mutex
	status map[string]string
}{status: map[string]string{}}

func setSuite(name, status string) {
	suites.Lock()
	defer suites.Unlock()
	suites.status[name] = status
}

func suiteSummary() string {
	suites.Lock()
	defer suites.Unlock()
	var parts []string
	for _, name := range []string{"tracepoint", "lsm", "testrun", "lsm-verifier", "coredump"} {
		status := suites.status[name]
		if status == "" {
			status = "not run"
		}
		parts = append(parts, name+"="+status)
	}
	return "monitor suites: " + strings.Join(parts, " ")
}

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
	case "victim":
		runVictim()
		return
	case "attacker":
		os.Exit(runAttacker())
	case "crasher":
		runCrasher()
		return
	case "tgid":
		runTGIDReporter()
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}

	code := m.Run()
	fmt.Println(suiteSummary())
	os.Exit(code)
}

// runVictim holds the canary in its environment (set by the test) and in a
// heap buffer whose address it prints, then waits for stdin to close.
func runVictim() {
	canary := []byte(os.Getenv(canaryEnv))
	buf := make([]byte, len(canary))
	copy(buf, canary)
	fmt.Printf("%d\n", uintptr(unsafe.Pointer(&buf[0])))

	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	runtime.KeepAlive(buf)
}

// runTGIDReporter prints getpid() and the id kernelTGID learns.
func runTGIDReporter() {
	tgid, err := kernelTGID()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitFailed)
	}
	fmt.Printf("%d %d\n", os.Getpid(), tgid)
}

// runCrasher dumps core: with GOTRACEBACK=crash set by the test, the Go
// runtime ends an unrecovered panic with SIGABRT.
func runCrasher() {
	limit := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &limit); err != nil {
		fmt.Fprintln(os.Stderr, "set core size limit:", err)
		os.Exit(exitFailed)
	}
	panic("crasher helper: intentional crash to produce a core dump")
}

func runAttacker() int {
	pid, _ := strconv.Atoi(os.Getenv(pidEnv))
	addr, _ := strconv.ParseUint(os.Getenv(addrEnv), 10, 64)
	target := attackTarget{
		pid:    pid,
		addr:   uintptr(addr),
		file:   os.Getenv(fileEnv),
		moveTo: os.Getenv(moveEnv),
		canary: []byte(os.Getenv(canaryEnv)),
	}

	err := runAttack(os.Getenv(attackEnv), target)
	switch {
	case err == nil:
		return exitSucceeded
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		fmt.Fprintln(os.Stderr, "denied:", err)
		return exitDenied
	case errors.Is(err, errMismatch):
		fmt.Fprintln(os.Stderr, err)
		return exitMismatch
	}
	fmt.Fprintln(os.Stderr, "failed:", err)
	return exitFailed
}

// attackTarget is what an attack reads: the victim's pid and canary
// address, the Phantom file, and the canary to compare with. moveTo is the
// cgroup the inherited-read attack moves itself into.
type attackTarget struct {
	pid    int
	addr   uintptr
	file   string
	moveTo string
	canary []byte
}

var errMismatch = errors.New("access returned data other than the canary")

// Attacks. Attach-mode ones read the canary; read-mode ones only need to
// succeed.
const (
	attackPtraceAttach = "ptrace_attach"
	attackPtraceSeize  = "ptrace_seize"
	attackProcessVM    = "process_vm_readv"
	attackProcMem      = "proc_mem"
	attackProcEnviron  = "proc_environ"
	attackFileRead     = "file_read"
	attackProcNS       = "proc_ns"
	attackProcStatus   = "proc_status"
	attackVolumeList   = "volume_list"
	// attackInheritedRead opens the file, leaves for target.moveTo, reads.
	attackInheritedRead = "inherited_read"
)

// runAttack performs one access on target. The test process runs it too,
// as the daemon.
func runAttack(name string, target attackTarget) error {
	switch name {
	case attackPtraceAttach:
		return ptraceRead(target, false)
	case attackPtraceSeize:
		return ptraceRead(target, true)
	case attackProcessVM:
		got := make([]byte, len(target.canary))
		local := []unix.Iovec{{Base: &got[0]}}
		local[0].SetLen(len(got))
		remote := []unix.RemoteIovec{{Base: target.addr, Len: len(got)}}
		if _, err := unix.ProcessVMReadv(target.pid, local, remote, 0); err != nil {
			return fmt.Errorf("process_vm_readv: %w", err)
		}
		return compareCanary(got, target.canary)
	case attackProcMem:
		return readProcMem(target)
	case attackProcEnviron:
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", target.pid))
		if err != nil {
			return err
		}
		if !bytes.Contains(data, target.canary) {
			return errMismatch
		}
		return nil
	case attackFileRead:
		data, err := os.ReadFile(target.file)
		if err != nil {
			return err
		}
		return compareCanary(data, target.canary)
	case attackProcNS:
		path := fmt.Sprintf("/proc/%d/ns/net", target.pid)
		if _, err := os.Readlink(path); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		return f.Close()
	case attackInheritedRead:
		return inheritedRead(target)
	case attackVolumeList:
		entries, err := os.ReadDir(filepath.Dir(target.file))
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return errors.New("volume directory is empty")
		}
		return nil
	case attackProcStatus:
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", target.pid))
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte("Name:")) {
			return errors.New("status file has no Name field")
		}
		return nil
	}
	return fmt.Errorf("unknown attack %q", name)
}

// ptraceRead attaches to the victim, reads the canary with PTRACE_PEEKDATA
// and detaches. Seize mode stops the tracee with PTRACE_INTERRUPT.
func ptraceRead(target attackTarget, seize bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if seize {
		if err := unix.PtraceSeize(target.pid); err != nil {
			return fmt.Errorf("ptrace seize: %w", err)
		}
		if err := unix.PtraceInterrupt(target.pid); err != nil {
			return fmt.Errorf("ptrace interrupt: %w", err)
		}
	} else if err := unix.PtraceAttach(target.pid); err != nil {
		return fmt.Errorf("ptrace attach: %w", err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(target.pid, &ws, unix.WALL, nil); err != nil {
		return fmt.Errorf("wait for tracee: %w", err)
	}

	got := make([]byte, len(target.canary))
	_, peekErr := unix.PtracePeekData(target.pid, target.addr, got)
	if err := unix.PtraceDetach(target.pid); err != nil {
		return fmt.Errorf("ptrace detach: %w", err)
	}
	if peekErr != nil {
		return fmt.Errorf("ptrace peek: %w", peekErr)
	}
	return compareCanary(got, target.canary)
}

// inheritedRead opens the file where it runs, moves the whole process into
// the cgroup at target.moveTo and then reads through the open descriptor.
func inheritedRead(target attackTarget) error {
	f, err := os.Open(target.file)
	if err != nil {
		return err
	}
	defer f.Close()

	procs := filepath.Join(target.moveTo, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("move to %s: %w", target.moveTo, err)
	}
	got := make([]byte, len(target.canary))
	if _, err := io.ReadFull(f, got); err != nil {
		return err
	}
	return compareCanary(got, target.canary)
}

func readProcMem(target attackTarget) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", target.pid))
	if err != nil {
		return err
	}
	defer f.Close()

	got := make([]byte, len(target.canary))
	if _, err := f.ReadAt(got, int64(target.addr)); err != nil {
		return fmt.Errorf("read /proc/%d/mem: %w", target.pid, err)
	}
	return compareCanary(got, target.canary)
}

func compareCanary(got, want []byte) error {
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: got %d bytes", errMismatch, len(got))
	}
	return nil
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs, create cgroups and mount tmpfs")
	}
}
