package contract

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPKIIssue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)

	secret, err := c.Logical().WriteWithContext(ctx, fx.pkiMount+"/issue/app", map[string]any{
		"common_name": "api.payments.svc.cluster.local",
		"alt_names":   "api-0.payments.svc.cluster.local",
		"ttl":         "30m",
	})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if secret == nil {
		t.Fatal("issue: empty response")
	}
	for _, key := range []string{"certificate", "private_key", "issuing_ca", "serial_number", "private_key_type"} {
		if s, _ := secret.Data[key].(string); s == "" {
			t.Fatalf("issue: %s is empty", key)
		}
	}

	cert := parseCert(t, secret.Data["certificate"].(string))
	ca := parseCert(t, secret.Data["issuing_ca"].(string))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		DNSName:     "api-0.payments.svc.cluster.local",
		CurrentTime: tg.now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Errorf("certificate does not verify against issuing_ca: %v", err)
	}
	if cert.Subject.CommonName != "api.payments.svc.cluster.local" {
		t.Errorf("common name = %q", cert.Subject.CommonName)
	}
	if got := cert.NotAfter.Sub(tg.now()); got < 29*time.Minute || got > 31*time.Minute {
		t.Errorf("certificate lifetime = %v, want about 30m", got)
	}
	if got := secret.Data["serial_number"].(string); got != serialString(cert) {
		t.Errorf("serial_number = %q, want %q", got, serialString(cert))
	}
	checkPrivateKey(t, secret.Data["private_key"].(string), cert)

	chain, _ := secret.Data["ca_chain"].([]any)
	if len(chain) == 0 || strings.TrimSpace(chain[0].(string)) != strings.TrimSpace(secret.Data["issuing_ca"].(string)) {
		t.Errorf("ca_chain = %v, want it to start with issuing_ca", chain)
	}
}

func TestPKIIssueRejectsName(t *testing.T) {
	t.Parallel()
	_, err := login(t, payments).Logical().WriteWithContext(context.Background(), fx.pkiMount+"/issue/app",
		map[string]any{"common_name": "evil.example.com"})
	wantResponseError(t, err, http.StatusBadRequest, "common name evil.example.com not allowed by this role")
}

func parseCert(t *testing.T, text string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		t.Fatalf("no PEM block in %q", text)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}

// checkPrivateKey checks that the returned EC key belongs to cert.
func checkPrivateKey(t *testing.T, text string, cert *x509.Certificate) {
	t.Helper()
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		t.Fatal("private_key is not PEM")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("parse private key: %v", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		t.Error("private_key does not match the certificate")
	}
}

// serialString formats a serial as OpenBao does: hex bytes joined by ":".
func serialString(cert *x509.Certificate) string {
	parts := make([]string, 0, len(cert.SerialNumber.Bytes()))
	for _, b := range cert.SerialNumber.Bytes() {
		parts = append(parts, fmt.Sprintf("%02x", b))
	}
	return strings.Join(parts, ":")
}
