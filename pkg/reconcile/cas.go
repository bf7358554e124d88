package reconcile

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/phantom-sec/phantom/pkg/webhook"
)

// maxCAsPerPod bounds how many certificates one replica's annotation may
// add to the caBundle. A replica publishes two during a rotation.
const maxCAsPerPod = 4

// caTracker remembers the CA certificates that webhook replicas published
// in their AnnotationWebhookCA annotation. A CA stays in the caBundle for
// retention after it was last seen, unless it expires first, so that an
// API server whose endpoints or configuration lag behind still reaches a
// replica that has just stopped or rotated.
type caTracker struct {
	retention time.Duration

	mu   sync.Mutex
	seen map[[sha256.Size]byte]*seenCA
}

type seenCA struct {
	cert     *x509.Certificate
	lastSeen time.Time
}

func newCATracker(retention time.Duration) *caTracker {
	return &caTracker{retention: retention, seen: map[[sha256.Size]byte]*seenCA{}}
}

// observe records the CAs a replica pod publishes. Pods that have finished
// are ignored: their process no longer serves. It returns the problems of
// the annotation, for the log.
func (t *caTracker) observe(pod *corev1.Pod, now time.Time) error {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	value, ok := pod.Annotations[webhook.AnnotationWebhookCA]
	if !ok {
		return nil
	}
	certs, err := parseCAs([]byte(value), now)

	t.mu.Lock()
	defer t.mu.Unlock()
	for _, cert := range certs {
		key := sha256.Sum256(cert.Raw)
		if entry, ok := t.seen[key]; ok {
			entry.lastSeen = now
			continue
		}
		t.seen[key] = &seenCA{cert: cert, lastSeen: now}
	}
	return err
}

// bundle returns the PEM caBundle: every CA seen within retention that has
// not expired, oldest first. It drops expired CAs from the tracker. CAs
// past retention stay in it, for known, until they expire.
func (t *caTracker) bundle(now time.Time) []byte {
	t.mu.Lock()
	var current []*x509.Certificate
	for key, entry := range t.seen {
		switch {
		case !now.Before(entry.cert.NotAfter):
			delete(t.seen, key)
		case now.Sub(entry.lastSeen) <= t.retention:
			current = append(current, entry.cert)
		}
	}
	t.mu.Unlock()

	// A stable order keeps the caBundle unchanged while the set is.
	slices.SortFunc(current, func(a, b *x509.Certificate) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return bytes.Compare(a.Raw, b.Raw)
	})
	var out []byte
	for _, cert := range current {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return out
}

// known reports whether every certificate of a caBundle is an unexpired
// CA that a replica published while this process watched.
func (t *caTracker) known(bundle []byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return len(bytes.TrimSpace(rest)) == 0
		}
		if _, ok := t.seen[sha256.Sum256(block.Bytes)]; !ok {
			return false
		}
	}
}

// parseCAs returns the valid, unexpired CA certificates of a PEM
// annotation, at most maxCAsPerPod, and an error naming what it skipped.
func parseCAs(data []byte, now time.Time) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	var skipped []string
	for i := 0; ; i++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		switch {
		case block.Type != "CERTIFICATE":
			skipped = append(skipped, fmt.Sprintf("block %d is a %s, not a CERTIFICATE", i, block.Type))
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("block %d: %v", i, err))
		case !cert.IsCA || !cert.BasicConstraintsValid:
			skipped = append(skipped, fmt.Sprintf("block %d is not a CA certificate", i))
		case !now.Before(cert.NotAfter):
			skipped = append(skipped, fmt.Sprintf("block %d expired at %s", i, cert.NotAfter.Format(time.RFC3339)))
		case len(certs) == maxCAsPerPod:
			skipped = append(skipped, fmt.Sprintf("block %d is past the maximum of %d CAs", i, maxCAsPerPod))
		default:
			certs = append(certs, cert)
		}
	}
	if len(skipped) > 0 {
		return certs, fmt.Errorf("annotation %s: skipped %v", webhook.AnnotationWebhookCA, skipped)
	}
	return certs, nil
}
