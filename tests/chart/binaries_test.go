package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// helpFlag matches a flag name in the usage text of Go's flag package
// ("  -name type") and of pflag ("  --name type").
var helpFlag = regexp.MustCompile(`(?m)^\s+-{1,2}([A-Za-z0-9][A-Za-z0-9_.-]*)`)

// binaryFlags builds ./cmd/<name> and returns the flag names its -h output
// lists.
func binaryFlags(t *testing.T, name string) map[string]bool {
	t.Helper()
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "cmd", name)); err != nil {
		t.Skipf("cmd/%s does not exist yet, so its flags cannot be checked: %v", name, err)
	}

	bin := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}

	// The exit status of -h differs between flag packages and is not
	// checked; the usage text is.
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 3 {
		t.Fatalf("%s -h lists %d flags, want its usage text:\n%s", name, len(flags), out)
	}
	return flags
}

// TestArgsAreBinaryFlags checks that every flag the chart passes, with
// every optional part of it switched on, exists in the binary it runs.
func TestArgsAreBinaryFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries; skipped with -short")
	}
	objects := decodeAll(t, renderValues(t, allValues(t)))
	cases := map[string]corev1.PodSpec{
		"phantom-node":    nodeDaemonSet(t, objects).Spec.Template.Spec,
		"phantom-webhook": webhookDeployment(t, objects).Spec.Template.Spec,
	}
	for name, pod := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			known := binaryFlags(t, name)
			var unknown []string
			for flag := range flagValues(t, container(t, pod).Args) {
				if !known[flag] {
					unknown = append(unknown, "--"+flag)
				}
			}
			sort.Strings(unknown)
			if len(unknown) > 0 {
				t.Errorf("%s has no flags %s", name, strings.Join(unknown, ", "))
			}
		})
	}
}

// dockerfile is the part of a Dockerfile that the chart depends on.
type dockerfile struct {
	from       string
	copies     map[string]string // source to destination
	user       string
	entrypoint string
}

var entrypointExec = regexp.MustCompile(`^\["([^"]+)"\]$`)

func parseDockerfile(t *testing.T, rel string) dockerfile {
	t.Helper()
	df := dockerfile{copies: map[string]string{}}
	for i, line := range strings.Split(readFile(t, rel), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			df.from = fields[1]
		case "COPY":
			if len(fields) != 3 {
				t.Fatalf("%s:%d: COPY %v, want one source and one destination", rel, i+1, fields[1:])
			}
			df.copies[fields[1]] = fields[2]
		case "USER":
			df.user = fields[1]
		case "ENTRYPOINT":
			m := entrypointExec.FindStringSubmatch(strings.Join(fields[1:], " "))
			if m == nil {
				t.Fatalf("%s:%d: ENTRYPOINT %q, want the exec form with one element", rel, i+1, fields[1:])
			}
			df.entrypoint = m[1]
		}
	}
	return df
}

// TestDockerfiles checks that each image holds only its static binary and
// runs as the user that the chart's securityContext expects.
func TestDockerfiles(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, minimalValues()))
	node := nodeDaemonSet(t, objects).Spec.Template.Spec
	webhook := webhookDeployment(t, objects).Spec.Template.Spec
	cases := []struct {
		binary string
		user   string
		chart  int64
	}{
		{binary: "phantom-node", user: "0:0", chart: ptr.Deref(container(t, node).SecurityContext.RunAsUser, -1)},
		{binary: "phantom-webhook", user: "65532:65532", chart: ptr.Deref(webhook.SecurityContext.RunAsUser, -1)},
	}
	for _, tc := range cases {
		t.Run(tc.binary, func(t *testing.T) {
			t.Parallel()
			df := parseDockerfile(t, "build/"+tc.binary+".Dockerfile")
			if df.from != "scratch" {
				t.Errorf("FROM %s, want scratch", df.from)
			}
			wantCopies := map[string]string{"bin/" + tc.binary: "/usr/local/bin/" + tc.binary}
			if len(df.copies) != 1 || df.copies["bin/"+tc.binary] != wantCopies["bin/"+tc.binary] {
				t.Errorf("COPY %v, want only %v", df.copies, wantCopies)
			}
			if df.entrypoint != "/usr/local/bin/"+tc.binary {
				t.Errorf("ENTRYPOINT %q, want /usr/local/bin/%s", df.entrypoint, tc.binary)
			}
			if df.user != tc.user {
				t.Errorf("USER %q, want %q", df.user, tc.user)
			}
			uid, _, _ := strings.Cut(df.user, ":")
			if want := strings.TrimSpace(uid); want != "" && want != strconv.FormatInt(tc.chart, 10) {
				t.Errorf("USER %s differs from the chart's runAsUser %d", df.user, tc.chart)
			}
		})
	}
}
