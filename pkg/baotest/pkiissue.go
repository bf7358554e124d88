package baotest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"time"
)

var randReader = rand.Reader

// pkiBackdate is how far before the request OpenBao starts a certificate's
// validity, to tolerate clock skew.
const pkiBackdate = 30 * time.Second

// issueRequest is a validated pki/issue request.
type issueRequest struct {
	role     *pkiRole
	issuer   *pkiIssuer
	cn       string
	dnsNames []string
	ips      []net.IP
	ttl      time.Duration
	warnings []string
}

// issue creates a key and a certificate signed by the default issuer. Key
// generation runs without the server lock.
func (b *pkiBackend) issue(r *request, roleName string) (*response, error) {
	b.s.mu.Lock()
	req, err := b.prepareIssue(r, roleName)
	b.s.mu.Unlock()
	if err != nil {
		return nil, err
	}

	key, keyPEM, err := generateKey(req.role.keyType, req.role.keyBits)
	if err != nil {
		return nil, internalError("generate key: %v", err)
	}
	cert, certPEM, err := signLeaf(req, key, r.now)
	if err != nil {
		return nil, internalError("create certificate: %v", err)
	}

	data := map[string]any{
		"certificate":      certPEM,
		"issuing_ca":       req.issuer.certPEM,
		"ca_chain":         []string{req.issuer.certPEM},
		"private_key":      keyPEM,
		"private_key_type": req.role.keyType,
		"serial_number":    formatSerial(cert),
		"expiration":       cert.NotAfter.Unix(),
		"not_before":       cert.NotBefore.Unix(),
	}
	resp := &response{data: data, warnings: req.warnings}
	if !req.role.generateLease {
		return resp, nil
	}
	return b.attachLease(r, roleName, resp, cert)
}

// prepareIssue checks the role, the names and the TTL. Callers hold s.mu.
func (b *pkiBackend) prepareIssue(r *request, roleName string) (*issueRequest, error) {
	role := b.roles[roleName]
	if role == nil {
		return nil, badRequest("unknown role: %s", roleName)
	}
	if len(b.issuers) == 0 {
		return nil, badRequest("could not fetch the CA certificate (was one set?): no default issuer currently configured")
	}
	req := &issueRequest{role: role, issuer: b.issuers[0]}

	if err := req.readNames(r.data); err != nil {
		return nil, err
	}
	def, mountMax := b.s.mounts[b.path].leaseTTLs()
	if err := req.readTTL(r.data, def, mountMax, r.now); err != nil {
		return nil, err
	}
	return req, nil
}

func (req *issueRequest) readNames(data map[string]any) error {
	var err error
	if req.cn, err = fieldString(data, "common_name"); err != nil {
		return err
	}
	if req.cn == "" && req.role.requireCN {
		return badRequest(`the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false`)
	}
	if req.cn != "" && !req.role.allowsName(req.cn) {
		return badRequest("common name %s not allowed by this role", req.cn)
	}
	exclude, err := fieldBool(data, "exclude_cn_from_sans", false)
	if err != nil {
		return err
	}
	if req.cn != "" && !exclude && net.ParseIP(req.cn) == nil && !strings.Contains(req.cn, "@") {
		req.dnsNames = append(req.dnsNames, req.cn)
	}

	alt, _, err := fieldStrings(data, "alt_names")
	if err != nil {
		return err
	}
	for _, name := range alt {
		if !req.role.allowsName(name) {
			return badRequest("subject alternate name %s not allowed by this role", name)
		}
		req.dnsNames = append(req.dnsNames, name)
	}
	return req.readIPs(data)
}

func (req *issueRequest) readIPs(data map[string]any) error {
	ips, _, err := fieldStrings(data, "ip_sans")
	if err != nil {
		return err
	}
	if len(ips) > 0 && !req.role.allowIPSANs {
		return badRequest("IP Subject Alternative Names are not allowed in this role, but was provided %s", strings.Join(ips, ","))
	}
	for _, text := range ips {
		ip := net.ParseIP(text)
		if ip == nil {
			return badRequest("the value %q is not a valid IP address", text)
		}
		req.ips = append(req.ips, ip)
	}
	return nil
}

// readTTL picks the request TTL, else the role TTL, else the mount
// default, capped by the role or mount max TTL and by the CA's lifetime.
func (req *issueRequest) readTTL(data map[string]any, mountDefault, mountMax time.Duration, now time.Time) error {
	ttl, _, err := fieldDuration(data, "ttl")
	if err != nil {
		return err
	}
	if ttl == 0 {
		ttl = req.role.ttl
	}
	if ttl == 0 {
		ttl = mountDefault
	}
	maxTTL := req.role.maxTTL
	if maxTTL == 0 {
		maxTTL = mountMax
	}
	if ttl > maxTTL {
		req.warnings = append(req.warnings, fmt.Sprintf("TTL %q is longer than permitted maxTTL %q, so maxTTL is being used", ttl, maxTTL))
		ttl = maxTTL
	}

	notAfter := now.Add(ttl)
	if caEnd := req.issuer.cert.NotAfter; notAfter.After(caEnd) {
		return badRequest("cannot satisfy request, as TTL would result in notAfter of %s that is beyond the expiration of the CA certificate at %s",
			notAfter.UTC().Format(time.RFC3339Nano), caEnd.UTC().Format(time.RFC3339Nano))
	}
	req.ttl = ttl
	return nil
}

// allowsName applies the role's name rules to a common or alternative name.
func (role *pkiRole) allowsName(name string) bool {
	if role.allowAnyName || (role.allowLocalhost && name == "localhost") {
		return true
	}
	for _, domain := range role.allowedDomains {
		switch {
		case role.allowBareDomains && name == domain:
			return true
		case role.allowSubdomains && strings.HasSuffix(name, "."+domain):
			return true
		case role.allowGlobDomains && strings.Contains(domain, "*") && globMatch(domain, name):
			return true
		}
	}
	return false
}

func signLeaf(req *issueRequest, key crypto.Signer, now time.Time) (*x509.Certificate, string, error) {
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: req.cn, Organization: req.role.organization, OrganizationalUnit: req.role.ou},
		NotBefore:    now.Add(-pkiBackdate),
		NotAfter:     now.Add(req.ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		DNSNames:     req.dnsNames,
		IPAddresses:  req.ips,
		SubjectKeyId: keyID(key.Public()),
	}
	if req.role.serverFlag {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.role.clientFlag {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}

	der, err := x509.CreateCertificate(randReader, tmpl, req.issuer.cert, key.Public(), req.issuer.key)
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	return cert, string(pemCert(der)), nil
}

// attachLease gives the certificate a non-renewable lease that ends with
// it, as roles with generate_lease do.
func (b *pkiBackend) attachLease(r *request, roleName string, resp *response, cert *x509.Certificate) (*response, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()

	serial := formatSerial(cert)
	ttl := cert.NotAfter.Sub(r.now)
	l, leaseTTL, err := b.s.newLeaseLocked(leaseSpec{
		mount:     b.s.mounts[b.path],
		path:      b.path + "issue/" + roleName,
		token:     r.token,
		ttl:       ttl,
		maxTTL:    ttl,
		renewTTLs: func() (time.Duration, time.Duration, error) { return ttl, ttl, nil },
		onRevoke:  func() { b.revoked[serial] = true },
	}, r.now)
	if err != nil {
		return nil, err
	}
	resp.leaseID, resp.leaseDuration = l.id, seconds(leaseTTL)
	return resp, nil
}

// keyParams reads key_type and key_bits, defaulting bits by type.
func keyParams(data map[string]any, defType string, defBits int) (string, int, error) {
	keyType, err := fieldString(data, "key_type")
	if err != nil {
		return "", 0, err
	}
	if keyType == "" {
		keyType = defType
	}
	bits, err := fieldInt(data, "key_bits", defBits)
	if err != nil {
		return "", 0, err
	}

	switch keyType {
	case "rsa":
		if bits == 0 {
			bits = 2048
		}
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return "", 0, badRequest("unsupported bit length for RSA key: %d", bits)
		}
	case "ec":
		if bits == 0 {
			bits = 256
		}
		if bits != 224 && bits != 256 && bits != 384 && bits != 521 {
			return "", 0, badRequest("unsupported bit length for EC key: %d", bits)
		}
	default:
		return "", 0, badRequest("unknown key type: %s", keyType)
	}
	return keyType, bits, nil
}

// generateKey returns a new key and its PEM form (PKCS#1 for RSA, SEC 1
// for EC, as OpenBao's "pem" format).
func generateKey(keyType string, bits int) (crypto.Signer, string, error) {
	if keyType == "rsa" {
		key, err := rsa.GenerateKey(randReader, bits)
		if err != nil {
			return nil, "", err
		}
		block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
		return key, string(pem.EncodeToMemory(block)), nil
	}

	curve := map[int]elliptic.Curve{224: elliptic.P224(), 256: elliptic.P256(), 384: elliptic.P384(), 521: elliptic.P521()}[bits]
	key, err := ecdsa.GenerateKey(curve, randReader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", err
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
}

// formatSerial prints a serial as lowercase hex bytes joined by colons.
func formatSerial(cert *x509.Certificate) string {
	raw := hex.EncodeToString(cert.SerialNumber.Bytes())
	parts := make([]string, 0, len(raw)/2)
	for i := 0; i+1 < len(raw); i += 2 {
		parts = append(parts, raw[i:i+2])
	}
	return strings.Join(parts, ":")
}
