package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// clockSkew is how far before its creation a certificate becomes valid, so
// an API server whose clock is slightly behind still accepts it.
const clockSkew = 5 * time.Minute

// Backoff of CA publication retries.
const (
	publishRetryMin = time.Second
	publishRetryMax = 30 * time.Second
)

// CAPublisher makes the CA certificates of a replica visible to the
// leader's reconciler, which puts them into the caBundle.
type CAPublisher interface {
	// PublishCA replaces the published certificates with pemCerts, PEM
	// CERTIFICATE blocks. They are public: no private key is published.
	PublishCA(ctx context.Context, pemCerts []byte) error
}

// CertManagerConfig configures a CertManager.
type CertManagerConfig struct {
	// ServiceName and Namespace give the DNS names of the certificate:
	// <svc>, <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local.
	ServiceName string
	Namespace   string
	// Validity is the lifetime of each CA and serving certificate. A new
	// pair is made at two thirds of it.
	Validity time.Duration
	// SwitchDelay is how long the manager waits after the caBundle trusts
	// a new CA before it serves the new certificate, so that every API
	// server, each with its own watch on the configuration, has the new
	// caBundle too.
	SwitchDelay time.Duration
	Publisher   CAPublisher
	Trust       TrustSource
	Clock       clock.WithTicker
	Logger      *slog.Logger
}

// CertManager keeps this replica's serving certificate in memory. Each
// certificate is signed by its own freshly made CA whose private key is
// dropped right after signing, so the only private key that lives on is
// the serving key, and it never leaves the process.
//
// The manager publishes the CA through CAPublisher and switches to a new
// certificate only once the TrustSource reports that the caBundle trusts
// it, or when the old one is about to expire.
type CertManager struct {
	cfg      CertManagerConfig
	dnsNames []string

	current atomic.Pointer[servingCert]

	mu   sync.Mutex
	next *servingCert
}

// servingCert is a serving certificate with the CA that signed it.
type servingCert struct {
	cert      tls.Certificate
	leaf      *x509.Certificate
	ca        *x509.Certificate
	caPEM     []byte
	rotateAt  time.Time
	expiresAt time.Time
}

// NewCertManager validates cfg and makes the first certificate.
func NewCertManager(cfg CertManagerConfig) (*CertManager, error) {
	var errs []error
	if cfg.ServiceName == "" || cfg.Namespace == "" {
		errs = append(errs, errors.New("ServiceName and Namespace must be set"))
	}
	if cfg.Validity <= 0 {
		errs = append(errs, fmt.Errorf("Validity %s is not positive", cfg.Validity))
	}
	if cfg.SwitchDelay < 0 || cfg.SwitchDelay >= cfg.Validity/3 {
		errs = append(errs, fmt.Errorf("SwitchDelay %s must be at least 0 and less than a third of Validity", cfg.SwitchDelay))
	}
	if cfg.Publisher == nil || cfg.Trust == nil || cfg.Clock == nil || cfg.Logger == nil {
		errs = append(errs, errors.New("Publisher, Trust, Clock and Logger must be set"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new cert manager: %w", err)
	}

	m := &CertManager{cfg: cfg, dnsNames: DNSNames(cfg.ServiceName, cfg.Namespace)}
	first, err := m.issue()
	if err != nil {
		return nil, err
	}
	m.current.Store(first)
	return m, nil
}

// DNSNames returns the names the serving certificate of service svc in
// namespace ns is valid for. The API server calls the third one.
func DNSNames(svc, ns string) []string {
	return []string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local"}
}

// ServerName returns the name the API server uses to reach the service.
func (m *CertManager) ServerName() string { return m.dnsNames[2] }

// GetCertificate returns the current serving certificate. Use it as
// tls.Config.GetCertificate.
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return &m.current.Load().cert, nil
}

// Ready returns nil once the caBundle trusts the certificate being served.
func (m *CertManager) Ready() error {
	return m.cfg.Trust.Trusts(m.current.Load().leaf, m.ServerName(), m.cfg.Clock.Now())
}

// PublishedCAs returns the PEM CA certificates that this replica needs in
// the caBundle: the current one and, during a rotation, the next.
func (m *CertManager) PublishedCAs() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()

	out := bytes.Clone(m.current.Load().caPEM)
	if m.next != nil {
		out = append(out, m.next.caPEM...)
	}
	return out
}

// Run publishes the CA and rotates the certificate until ctx ends. It
// returns nil when ctx ends and an error only if a certificate cannot be
// made.
func (m *CertManager) Run(ctx context.Context) error {
	m.publish(ctx)
	for {
		current := m.current.Load()
		if !m.sleepUntil(ctx, current.rotateAt) {
			return nil
		}

		next, err := m.issue()
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.next = next
		m.mu.Unlock()
		m.cfg.Logger.Info("webhook certificate rotation started", "ca", fingerprint(next.ca), "expiresAt", next.expiresAt)
		m.publish(ctx)

		if !m.waitTrusted(ctx, next, current.expiresAt) {
			return nil
		}
		m.mu.Lock()
		m.current.Store(next)
		m.next = nil
		m.mu.Unlock()
		m.cfg.Logger.Info("webhook certificate rotated", "ca", fingerprint(next.ca), "expiresAt", next.expiresAt)
		m.publish(ctx)
	}
}

// waitTrusted waits until the caBundle trusts next, then SwitchDelay more.
// If the old certificate is about to expire first, it gives up waiting:
// an expired certificate is refused anyway. It returns false when ctx
// ends.
func (m *CertManager) waitTrusted(ctx context.Context, next *servingCert, deadline time.Time) bool {
	deadline = deadline.Add(-time.Minute)
	for {
		changed := m.cfg.Trust.Changed()
		err := m.cfg.Trust.Trusts(next.leaf, m.ServerName(), m.cfg.Clock.Now())
		if err == nil {
			break
		}
		if !m.cfg.Clock.Now().Before(deadline) {
			m.cfg.Logger.Warn("serving a certificate the caBundle does not trust yet, because the current one expires",
				"ca", fingerprint(next.ca), "error", err)
			return true
		}

		timer := m.cfg.Clock.NewTimer(deadline.Sub(m.cfg.Clock.Now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-changed:
		case <-timer.C():
		}
		timer.Stop()
	}

	switchAt := m.cfg.Clock.Now().Add(m.cfg.SwitchDelay)
	if switchAt.After(deadline) {
		switchAt = deadline
	}
	return m.sleepUntil(ctx, switchAt)
}

// publish publishes the CAs, retrying with backoff until it succeeds or ctx
// ends.
func (m *CertManager) publish(ctx context.Context) {
	delay := publishRetryMin
	for {
		err := m.cfg.Publisher.PublishCA(ctx, m.PublishedCAs())
		if err == nil {
			return
		}
		m.cfg.Logger.Warn("publish webhook CA failed, retrying", "error", err, "retryIn", delay)
		if !m.sleepUntil(ctx, m.cfg.Clock.Now().Add(delay)) {
			return
		}
		delay = min(2*delay, publishRetryMax)
	}
}

// sleepUntil waits until t on the manager's clock. It returns false when
// ctx ends first.
func (m *CertManager) sleepUntil(ctx context.Context, t time.Time) bool {
	wait := t.Sub(m.cfg.Clock.Now())
	if wait <= 0 {
		return ctx.Err() == nil
	}
	timer := m.cfg.Clock.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C():
		return true
	}
}

// issue makes a CA and a serving certificate signed by it, both ECDSA
// P-256 and valid for Validity. The CA key goes out of scope on return.
func (m *CertManager) issue() (*servingCert, error) {
	now := m.cfg.Clock.Now()
	notBefore, notAfter := now.Add(-clockSkew), now.Add(m.cfg.Validity)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "phantom-webhook CA " + m.cfg.Namespace + "/" + m.cfg.ServiceName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	cert, err := m.issueServing(ca, caKey, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	return &servingCert{
		cert:      cert,
		leaf:      cert.Leaf,
		ca:        ca,
		caPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		rotateAt:  now.Add(m.cfg.Validity * 2 / 3),
		expiresAt: notAfter,
	}, nil
}

// issueServing makes the serving key and certificate, signed by ca.
func (m *CertManager) issueServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, notBefore, notAfter time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate serving key: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: m.dnsNames[2]},
		DNSNames:     m.dnsNames,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse serving certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func randomSerial() *big.Int {
	// rand.Int reads from crypto/rand, which does not fail on Linux.
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return serial.Add(serial, big.NewInt(1))
}

// fingerprint returns the short SHA-256 fingerprint of a certificate for
// logs.
func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:8])
}
