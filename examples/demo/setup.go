package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openbao/openbao/api/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

// openBao is the OpenBao the demo uses, provisioned for the example pod.
type openBao struct {
	addr      string
	caFile    string
	authMount string
	admin     *api.Client
	issuer    *baotest.Issuer
	server    *baotest.Server
}

// startOpenBao starts the test server, or uses PHANTOM_OPENBAO_ADDR with
// the admin token in PHANTOM_OPENBAO_TOKEN, and sets up JWT auth, a role
// and a policy for the pod's namespace and service account, and secrets.
func startOpenBao(ctx context.Context, pod *corev1.Pod, role string) (*openBao, error) {
	b := &openBao{authMount: "jwt-demo-" + randomHex(4)}
	if addr := os.Getenv("PHANTOM_OPENBAO_ADDR"); addr != "" {
		b.addr = addr
		fmt.Printf("using the OpenBao at %s (PHANTOM_OPENBAO_ADDR)\n", addr)
	} else {
		server, err := baotest.Start(baotest.Options{})
		if err != nil {
			return nil, fmt.Errorf("start OpenBao test server: %w", err)
		}
		b.server, b.addr = server, server.URL()
		fmt.Printf("started Phantom's in-process OpenBao TEST SERVER (not a real OpenBao) at %s\n", b.addr)
		fmt.Println("set PHANTOM_OPENBAO_ADDR and PHANTOM_OPENBAO_TOKEN to run the demo against a real OpenBao")
	}

	cfg := api.DefaultConfig()
	cfg.Address = b.addr
	admin, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("create OpenBao admin client: %w", err)
	}
	if b.server != nil {
		admin.SetToken(b.server.RootToken())
	} else if token := os.Getenv("PHANTOM_OPENBAO_TOKEN"); token != "" {
		admin.SetToken(token)
	} else {
		return nil, fmt.Errorf("PHANTOM_OPENBAO_TOKEN is empty: set it to a token that may configure auth methods and policies")
	}
	b.admin = admin

	if err := b.provision(ctx, pod, role); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *openBao) provision(ctx context.Context, pod *corev1.Pod, role string) error {
	issuer, err := baotest.NewIssuer(issuerURL)
	if err != nil {
		return fmt.Errorf("create service-account token issuer: %w", err)
	}
	b.issuer = issuer
	policy := fmt.Sprintf("path \"secret/data/%s/*\" {\n  capabilities = [\"read\"]\n}\n", pod.Namespace)

	steps := []struct {
		what string
		do   func() error
	}{
		{"enable KV v2 at secret/", func() error { return baotest.EnableKV2(ctx, b.admin, "secret") }},
		{"enable JWT auth at " + b.authMount, func() error {
			return baotest.EnableJWTAuth(ctx, b.admin, b.authMount, issuerURL, issuer.PublicKeyPEM())
		}},
		{"write policy " + role, func() error { return baotest.WritePolicy(ctx, b.admin, role, policy) }},
		{"write role " + role, func() error {
			return baotest.WriteJWTRole(ctx, b.admin, b.authMount, role, baotest.JWTRole{
				BoundAudiences: []string{audience},
				BoundClaims: map[string]any{
					"/kubernetes.io/namespace":           pod.Namespace,
					"/kubernetes.io/serviceaccount/name": pod.Spec.ServiceAccountName,
				},
				UserClaim:     "sub",
				ClaimMappings: map[string]string{"/kubernetes.io/pod/name": "pod"},
				TokenPolicies: []string{role},
				TokenTTL:      15 * time.Minute,
			})
		}},
		{"write secret payments/db", func() error { return b.writeDBSecret(ctx) }},
		{"write secret payments/api", func() error {
			_, err := b.admin.KVv2("secret").Put(ctx, pod.Namespace+"/api", map[string]any{
				"endpoint": "https://payments.example.eu", "key": "demo-" + randomHex(12),
			})
			return err
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
		fmt.Printf("  %s\n", s.what)
	}
	return nil
}

func (b *openBao) writeDBSecret(ctx context.Context) error {
	_, err := b.admin.KVv2("secret").Put(ctx, "payments/db", map[string]any{
		"username": "payments-app", "password": "demo-" + randomHex(16),
	})
	return err
}

func (b *openBao) close() {
	if b.server != nil {
		_ = b.server.Close()
	}
}

// nodeProcess is a running phantom-node.
type nodeProcess struct {
	cmd *exec.Cmd
	out *syncBuffer
}

func startNode(binary, socket, stateDir string, b *openBao) (*nodeProcess, error) {
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("phantom-node binary: %w (run make build first)", err)
	}
	// The cluster's service-account keys, as phantom-node would fetch them
	// from the API server's /openid/v1/jwks, for offline token checks.
	jwksFile := filepath.Join(stateDir, "jwks.json")
	if err := os.WriteFile(jwksFile, b.issuer.JWKS(), 0o600); err != nil {
		return nil, fmt.Errorf("write service-account keys: %w", err)
	}
	args := []string{
		"--endpoint", "unix://" + socket,
		"--node-id", "demo-node",
		"--openbao-addr", b.addr,
		"--auth-mount", b.authMount,
		"--token-audience", audience,
		"--metrics-addr", "",
		"--registration-dir", "",
		"--state-dir", stateDir,
		"--service-account-jwks-file", jwksFile,
		"--service-account-issuer", issuerURL,
		// No kubelet creates pod cgroups here, so the eBPF monitor would
		// have no pod to protect.
		"--runtime-protection", "off",
	}
	fmt.Printf("$ %s %s\n", binary, strings.Join(args, " "))
	out := &syncBuffer{}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Keep the admin token out of the daemon's environment.
	cmd.Env = filterEnv(os.Environ(), "PHANTOM_OPENBAO_TOKEN", "BAO_TOKEN", "VAULT_TOKEN")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start phantom-node: %w", err)
	}
	return &nodeProcess{cmd: cmd, out: out}, nil
}

func (n *nodeProcess) output() string { return n.out.String() }

// stop sends SIGTERM to the daemon the demo started and waits for it.
func (n *nodeProcess) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
}

func filterEnv(env []string, drop ...string) []string {
	kept := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			if name == d {
				keep = false
			}
		}
		if keep {
			kept = append(kept, kv)
		}
	}
	return kept
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
