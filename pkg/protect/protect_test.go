package protect

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/phantom-sec/phantom/pkg/monitor"
	"github.com/phantom-sec/phantom/pkg/satoken"
)

// recordingMonitor records registrations as the real monitor would hold
// them.
type recordingMonitor struct {
	pods    map[string]monitor.Pod
	volumes map[uint64]string
	calls   []string
}

func newRecordingMonitor() *recordingMonitor {
	return &recordingMonitor{pods: map[string]monitor.Pod{}, volumes: map[uint64]string{}}
}

func (m *recordingMonitor) RegisterPod(p monitor.Pod) error {
	m.calls = append(m.calls, "RegisterPod "+p.UID)
	m.pods[p.UID] = p
	return nil
}

func (m *recordingMonitor) UnregisterPod(uid string) error {
	m.calls = append(m.calls, "UnregisterPod "+uid)
	delete(m.pods, uid)
	return nil
}

func (m *recordingMonitor) RegisterVolume(uid string, dev uint64) error {
	if _, ok := m.pods[uid]; !ok {
		return monitor.ErrPodNotRegistered
	}
	m.calls = append(m.calls, "RegisterVolume "+uid)
	m.volumes[dev] = uid
	return nil
}

func (m *recordingMonitor) UnregisterVolume(dev uint64) error {
	m.calls = append(m.calls, "UnregisterVolume "+m.volumes[dev])
	delete(m.volumes, dev)
	return nil
}

// fakeAPIServer serves GET of namespace payments with labels and records
// the Events posted to it, over real HTTP.
func fakeAPIServer(t *testing.T, labels map[string]string, events *[]corev1.Event) rest.Interface {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/payments", func(w http.ResponseWriter, _ *http.Request) {
		ns := corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "payments", Labels: labels}}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ns)
	})
	mux.HandleFunc("POST /api/v1/namespaces/payments/events", func(w http.ResponseWriter, r *http.Request) {
		var e corev1.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		*events = append(*events, e)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(e)
	})
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	client, err := NewCoreClient(&rest.Config{Host: server.URL})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func newProtector(t *testing.T, mon Monitor, labels map[string]string) *Protector {
	t.Helper()
	client := fakeAPIServer(t, labels, &[]corev1.Event{})
	devices := map[string]uint64{"/t/a": 10, "/t/b": 11, "/t/c": 12}
	p, err := New(Config{
		Monitor: mon,
		Modes:   KubeModes{Client: client},
		Default: monitor.ModeAudit,
		Device: func(target string) (uint64, error) {
			if dev, ok := devices[target]; ok {
				return dev, nil
			}
			return 0, errors.New("not mounted")
		},
		PodCgroup: func(uid string) (uint64, int, string, error) {
			if uid == "no-cgroup" {
				return 0, 0, "", monitor.ErrPodCgroupNotFound
			}
			return 4242, 4, "/kubepods/pod" + uid, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProtectRefcountsPods(t *testing.T) {
	t.Parallel()
	mon := newRecordingMonitor()
	p := newProtector(t, mon, nil)
	pod := satoken.Pod{Namespace: "payments", Name: "api-0", UID: "u1"}
	ctx := context.Background()

	for _, err := range []error{
		p.Protect(ctx, pod, "vol-a", "/t/a"),
		p.Protect(ctx, pod, "vol-a", "/t/a"), // republish
		p.Protect(ctx, pod, "vol-b", "/t/b"),
		p.Unprotect("vol-a"),
		p.Unprotect("vol-a"), // unknown now
		p.Unprotect("vol-b"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	want := []string{"RegisterPod u1", "RegisterVolume u1", "RegisterVolume u1", "UnregisterVolume u1", "UnregisterVolume u1", "UnregisterPod u1"}
	if diff := cmp.Diff(want, mon.calls); diff != "" {
		t.Errorf("monitor calls (-want +got):\n%s", diff)
	}
}

func TestProtectModeFromNamespace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		labels map[string]string
		want   monitor.Mode
	}{
		{nil, monitor.ModeAudit},
		{map[string]string{LabelMode: "enforce"}, monitor.ModeEnforce},
		{map[string]string{LabelMode: "audit"}, monitor.ModeAudit},
		{map[string]string{LabelMode: "enforced"}, monitor.ModeAudit}, // invalid: default, with a warning
	}
	for _, tt := range tests {
		mon := newRecordingMonitor()
		p := newProtector(t, mon, tt.labels)
		if err := p.Protect(context.Background(), satoken.Pod{Namespace: "payments", Name: "api-0", UID: "u1"}, "v", "/t/a"); err != nil {
			t.Fatal(err)
		}
		got := mon.pods["u1"]
		if got.Mode != tt.want || got.CgroupID != 4242 || got.CgroupLevel != 4 {
			t.Errorf("labels %v: registered %+v, want mode %q with cgroup 4242 level 4", tt.labels, got, tt.want)
		}
	}
}

func TestProtectErrors(t *testing.T) {
	t.Parallel()
	mon := newRecordingMonitor()
	p := newProtector(t, mon, nil)
	ctx := context.Background()

	err := p.Protect(ctx, satoken.Pod{Namespace: "payments", Name: "x", UID: "no-cgroup"}, "v1", "/t/a")
	if !errors.Is(err, monitor.ErrPodCgroupNotFound) {
		t.Errorf("Protect(no cgroup) = %v, want ErrPodCgroupNotFound", err)
	}
	err = p.Protect(ctx, satoken.Pod{Namespace: "payments", Name: "x", UID: "u2"}, "v2", "/t/missing")
	if err == nil || !strings.Contains(err.Error(), "v2") {
		t.Errorf("Protect(unmounted) = %v, want an error naming the volume", err)
	}
	if len(mon.pods) != 0 {
		t.Errorf("failed protections left pods registered: %v", mon.pods)
	}
}

func TestKubeEventsCreatesWarning(t *testing.T) {
	t.Parallel()
	var events []corev1.Event
	client := fakeAPIServer(t, nil, &events)
	KubeEvents{Client: client, Node: "node-a"}.PodEvent(monitor.PodRef{Namespace: "payments", Name: "api-0", UID: "u1"}, "SecretRead", "cat read /run/secrets/phantom/db")

	if len(events) != 1 {
		t.Fatalf("events = %d, want 1", len(events))
	}
	e := events[0]
	if e.Type != corev1.EventTypeWarning || e.Reason != "SecretRead" || e.InvolvedObject.Name != "api-0" || e.Source.Host != "node-a" {
		t.Errorf("event = %+v", e)
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"audit", "enforce"} {
		if _, err := ParseMode(ok); err != nil {
			t.Errorf("ParseMode(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "off", "Enforce"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) = nil error", bad)
		}
	}
}
