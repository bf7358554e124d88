package baotest

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"time"

	"github.com/google/uuid"
)

// pkiBackend is a PKI secrets engine with one default issuer per mount,
// created by root/generate/internal.
type pkiBackend struct {
	s       *Server
	path    string
	issuers []*pkiIssuer // the first one is the default issuer
	roles   map[string]*pkiRole
	revoked map[string]bool // serial numbers whose lease was revoked
}

type pkiIssuer struct {
	id      string
	keyID   string
	cert    *x509.Certificate
	certPEM string
	key     crypto.Signer
}

type pkiRole struct {
	allowedDomains   []string
	allowSubdomains  bool
	allowBareDomains bool
	allowGlobDomains bool
	allowAnyName     bool
	allowLocalhost   bool
	allowIPSANs      bool
	requireCN        bool
	serverFlag       bool
	clientFlag       bool
	generateLease    bool
	ttl              time.Duration
	maxTTL           time.Duration
	keyType          string
	keyBits          int
	organization     []string
	ou               []string
}

func newPKIBackend(s *Server, path string) *pkiBackend {
	return &pkiBackend{s: s, path: path, roles: map[string]*pkiRole{}, revoked: map[string]bool{}}
}

func (b *pkiBackend) route(rest string) *route {
	head, name, _ := strings.Cut(rest, "/")
	switch {
	case rest == "root/generate/internal" || rest == "root/generate/exported":
		rt := newRoute().write(OpAdmin, func(r *request) (*response, error) {
			return b.generateRoot(r, strings.HasSuffix(rest, "exported"))
		})
		rt.unlocked = true
		return rt
	case head == "roles" && name == "":
		return newRoute().list(OpAdmin, func(*request) (*response, error) { return listResponse(sortedKeys(b.roles)), nil })
	case head == "roles":
		rt := newRoute().
			read(OpAdmin, func(*request) (*response, error) { return b.readRole(name) }).
			write(OpAdmin, func(r *request) (*response, error) { return b.writeRole(r, name) }).
			del(OpAdmin, func(*request) (*response, error) { delete(b.roles, name); return nil, nil })
		rt.exists = func(*request) bool { return b.roles[name] != nil }
		return rt
	case head == "issue" && name != "":
		rt := newRoute().write(OpDynamicRead, func(r *request) (*response, error) { return b.issue(r, name) })
		rt.unlocked = true
		return rt
	case rest == "cert/ca" || rest == "ca/pem":
		rt := newRoute().read(OpAdmin, func(*request) (*response, error) { return b.readCA(rest == "ca/pem") })
		rt.unauthenticated = true
		return rt
	}
	return nil
}

// generateRoot creates a self-signed CA. The first CA of a mount stays its
// default issuer.
func (b *pkiBackend) generateRoot(r *request, exported bool) (*response, error) {
	cn, err := fieldString(r.data, "common_name")
	if err != nil {
		return nil, err
	}
	if cn == "" {
		return nil, badRequest(`the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false`)
	}
	keyType, keyBits, err := keyParams(r.data, "rsa", 0)
	if err != nil {
		return nil, err
	}
	ttl, _, err := fieldDuration(r.data, "ttl")
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		b.s.mu.Lock()
		_, ttl = b.s.mounts[b.path].leaseTTLs()
		b.s.mu.Unlock()
	}

	issuer, keyPEM, err := newSelfSignedIssuer(cn, keyType, keyBits, r.now, ttl)
	if err != nil {
		return nil, internalError("generate root CA: %v", err)
	}
	b.s.mu.Lock()
	b.issuers = append(b.issuers, issuer)
	b.s.mu.Unlock()

	data := map[string]any{
		"certificate":   issuer.certPEM,
		"issuing_ca":    issuer.certPEM,
		"serial_number": formatSerial(issuer.cert),
		"expiration":    issuer.cert.NotAfter.Unix(),
		"issuer_id":     issuer.id,
		"issuer_name":   "",
		"key_id":        issuer.keyID,
		"key_name":      "",
	}
	if exported {
		data["private_key"] = keyPEM
		data["private_key_type"] = keyType
	}
	return &response{data: data}, nil
}

// newSelfSignedIssuer generates a CA key and certificate valid for ttl.
func newSelfSignedIssuer(cn, keyType string, keyBits int, now time.Time, ttl time.Duration) (*pkiIssuer, string, error) {
	key, keyPEM, err := generateKey(keyType, keyBits)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-pkiBackdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          keyID(key.Public()),
	}
	der, err := x509.CreateCertificate(randReader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	return &pkiIssuer{id: uuid.NewString(), keyID: uuid.NewString(), cert: cert, certPEM: string(pemCert(der)), key: key}, keyPEM, nil
}

func (b *pkiBackend) readCA(rawPEM bool) (*response, error) {
	if len(b.issuers) == 0 {
		return nil, badRequest("no default issuer currently configured")
	}
	ca := b.issuers[0]
	if rawPEM {
		return &response{raw: []byte(ca.certPEM), contentType: "application/pem-certificate-chain"}, nil
	}
	return &response{data: map[string]any{
		"certificate":     ca.certPEM,
		"ca_chain":        []string{ca.certPEM},
		"issuer_id":       ca.id,
		"revocation_time": 0,
	}}, nil
}

func (b *pkiBackend) writeRole(r *request, name string) (*response, error) {
	role := &pkiRole{allowLocalhost: true, allowIPSANs: true, requireCN: true, serverFlag: true, clientFlag: true}
	if old := b.roles[name]; old != nil {
		copied := *old
		role = &copied
	}
	if err := parsePKIRoleBools(r.data, role); err != nil {
		return nil, err
	}

	var err error
	if list, ok, err := fieldStrings(r.data, "allowed_domains"); err != nil {
		return nil, err
	} else if ok {
		role.allowedDomains = list
	}
	if role.organization, _, err = fieldStrings(r.data, "organization"); err != nil {
		return nil, err
	}
	if role.ou, _, err = fieldStrings(r.data, "ou"); err != nil {
		return nil, err
	}
	if err := parsePKIRoleTTLs(r.data, role); err != nil {
		return nil, err
	}
	if role.keyType, role.keyBits, err = keyParams(r.data, orDefault(role.keyType, "rsa"), role.keyBits); err != nil {
		return nil, err
	}
	b.roles[name] = role
	return nil, nil
}

func parsePKIRoleBools(data map[string]any, role *pkiRole) error {
	for key, dst := range map[string]*bool{
		"allow_subdomains":   &role.allowSubdomains,
		"allow_bare_domains": &role.allowBareDomains,
		"allow_glob_domains": &role.allowGlobDomains,
		"allow_any_name":     &role.allowAnyName,
		"allow_localhost":    &role.allowLocalhost,
		"allow_ip_sans":      &role.allowIPSANs,
		"require_cn":         &role.requireCN,
		"server_flag":        &role.serverFlag,
		"client_flag":        &role.clientFlag,
		"generate_lease":     &role.generateLease,
	} {
		v, err := fieldBool(data, key, *dst)
		if err != nil {
			return err
		}
		*dst = v
	}
	return nil
}

func parsePKIRoleTTLs(data map[string]any, role *pkiRole) error {
	if d, ok, err := fieldDuration(data, "ttl"); err != nil {
		return err
	} else if ok {
		role.ttl = d
	}
	if d, ok, err := fieldDuration(data, "max_ttl"); err != nil {
		return err
	} else if ok {
		role.maxTTL = d
	}
	return nil
}

func (b *pkiBackend) readRole(name string) (*response, error) {
	role := b.roles[name]
	if role == nil {
		return nil, nil
	}
	return &response{data: map[string]any{
		"allowed_domains":    nonNilStrings(role.allowedDomains),
		"allow_subdomains":   role.allowSubdomains,
		"allow_bare_domains": role.allowBareDomains,
		"allow_glob_domains": role.allowGlobDomains,
		"allow_any_name":     role.allowAnyName,
		"allow_localhost":    role.allowLocalhost,
		"allow_ip_sans":      role.allowIPSANs,
		"require_cn":         role.requireCN,
		"server_flag":        role.serverFlag,
		"client_flag":        role.clientFlag,
		"generate_lease":     role.generateLease,
		"ttl":                seconds(role.ttl),
		"max_ttl":            seconds(role.maxTTL),
		"key_type":           role.keyType,
		"key_bits":           role.keyBits,
		"organization":       nonNilStrings(role.organization),
		"ou":                 nonNilStrings(role.ou),
	}}, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// PKICertificateRevoked reports whether the certificate with the serial
// number (OpenBao's "xx:xx:..." form) lost its lease by revocation or
// expiry. Certificates issued without a lease are never reported.
func (s *Server) PKICertificateRevoked(mount, serial string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	m := s.mounts[strings.Trim(mount, "/")+"/"]
	if m == nil {
		return false
	}
	b, ok := m.backend.(*pkiBackend)
	return ok && b.revoked[serial]
}
