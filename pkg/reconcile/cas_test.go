package reconcile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/phantom-sec/phantom/pkg/webhook"
)

func TestParseCAs(t *testing.T) {
	t.Parallel()
	now := time.Now()
	valid := pemCA(t, newTestCA(t, now.Add(time.Hour)))
	expired := pemCA(t, newTestCA(t, now.Add(-time.Minute)))
	leaf := pemLeaf(t, now.Add(time.Hour))
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not a key")})

	tests := []struct {
		name      string
		data      []byte
		wantCerts int
		wantErr   string
	}{
		{name: "one valid CA", data: valid, wantCerts: 1},
		{name: "expired CA", data: expired, wantErr: "expired"},
		{name: "leaf certificate", data: leaf, wantErr: "not a CA"},
		{name: "other PEM type", data: append(bytes.Clone(valid), key...), wantCerts: 1, wantErr: "PRIVATE KEY"},
		{name: "garbage", data: []byte("hello"), wantCerts: 0},
		{name: "too many", data: bytes.Repeat(valid, maxCAsPerPod+1), wantCerts: maxCAsPerPod, wantErr: "maximum of 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			certs, err := parseCAs(tt.data, now)
			if len(certs) != tt.wantCerts {
				t.Errorf("parsed %d certificates, want %d", len(certs), tt.wantCerts)
			}
			if tt.wantErr == "" && err != nil {
				t.Errorf("error = %v, want none", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCATrackerRetention(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tracker := newCATracker(10 * time.Minute)
	short := newTestCA(t, now.Add(30*time.Minute))
	long := newTestCA(t, now.Add(24*time.Hour))
	pod := func(certs ...*x509.Certificate) *corev1.Pod {
		var data []byte
		for _, c := range certs {
			data = append(data, pemCA(t, c)...)
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{webhook.AnnotationWebhookCA: string(data)}}}
	}

	if err := tracker.observe(pod(short, long), now); err != nil {
		t.Fatal(err)
	}
	if got := certCount(tracker.bundle(now)); got != 2 {
		t.Fatalf("bundle has %d certificates, want 2", got)
	}

	// Not seen for longer than the retention: out of the bundle, still
	// known as published.
	later := now.Add(11 * time.Minute)
	if got := certCount(tracker.bundle(later)); got != 0 {
		t.Errorf("bundle past retention has %d certificates, want 0", got)
	}
	if !tracker.known(pemCA(t, long)) {
		t.Error("a CA past retention is no longer known")
	}

	// Seen again, but one CA has expired.
	expiredTime := now.Add(31 * time.Minute)
	if err := tracker.observe(pod(long), expiredTime); err != nil {
		t.Fatal(err)
	}
	if got := certCount(tracker.bundle(expiredTime)); got != 1 {
		t.Errorf("bundle has %d certificates, want only the unexpired one", got)
	}
	if tracker.known(pemCA(t, short)) {
		t.Error("an expired CA is still known")
	}

	// A finished pod adds nothing.
	fresh := newTestCA(t, now.Add(time.Hour))
	finished := pod(fresh)
	finished.Status.Phase = corev1.PodSucceeded
	if err := tracker.observe(finished, expiredTime); err != nil {
		t.Fatal(err)
	}
	if tracker.known(pemCA(t, fresh)) {
		t.Error("a finished pod's CA was recorded")
	}
}

func certCount(bundle []byte) int {
	return bytes.Count(bundle, []byte("BEGIN CERTIFICATE"))
}

func pemLeaf(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    notAfter.Add(-time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
