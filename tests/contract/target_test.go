package contract

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

// Environment variables that select a real OpenBao.
const (
	envAddr     = "PHANTOM_TEST_OPENBAO_ADDR"
	envToken    = "PHANTOM_TEST_OPENBAO_TOKEN"
	envCACert   = "PHANTOM_TEST_OPENBAO_CACERT"
	envPostgres = "PHANTOM_TEST_POSTGRES_URL"
)

// target is the OpenBao under test.
type target struct {
	name      string
	addr      string
	rootToken string
	caPEM     []byte
	// srv and clock are set for the in-process test server only.
	srv   *baotest.Server
	clock *baotest.Clock
}

// tg and fx are set up once in TestMain and shared by all tests.
var (
	tg *target
	fx *fixture
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	var err error
	tg, err = newTarget()
	if err != nil {
		fmt.Fprintf(os.Stderr, "contract: %v\n", err)
		return 1
	}
	defer tg.close()
	fmt.Printf("contract: target %s\n", tg.name)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fx, err = newFixture(ctx, tg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "contract: set up fixture on %s: %v\n", tg.name, err)
		return 1
	}
	defer fx.cleanup(context.Background())

	return m.Run()
}

func newTarget() (*target, error) {
	addr, token := os.Getenv(envAddr), os.Getenv(envToken)
	if addr == "" && token == "" {
		clock := baotest.NewClock(time.Now().UTC().Truncate(time.Second))
		srv, err := baotest.Start(baotest.Options{TLS: true, Now: clock.Now})
		if err != nil {
			return nil, fmt.Errorf("start test server: %w", err)
		}
		return &target{name: "baotest test server at " + srv.URL(), addr: srv.URL(), rootToken: srv.RootToken(),
			caPEM: srv.CACertPEM(), srv: srv, clock: clock}, nil
	}
	if addr == "" || token == "" {
		return nil, fmt.Errorf("set both %s and %s to test a real OpenBao, or neither", envAddr, envToken)
	}

	tgt := &target{name: "real OpenBao at " + addr, addr: addr, rootToken: token}
	if path := os.Getenv(envCACert); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", envCACert, err)
		}
		tgt.caPEM = pem
	}
	return tgt, nil
}

func (tgt *target) close() {
	if tgt.srv != nil {
		_ = tgt.srv.Close()
	}
}

// isTestServer reports whether the suite runs against pkg/baotest.
func (tgt *target) isTestServer() bool {
	return tgt.srv != nil
}

// requireTestServer skips t on a real OpenBao.
func requireTestServer(t *testing.T, reason string) *baotest.Server {
	t.Helper()
	if !tg.isTestServer() {
		t.Skipf("needs the test server (%s); target is %s", reason, tg.name)
	}
	return tg.srv
}

// newClient returns an API client that sends token and never retries.
func (tgt *target) newClient(token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address = tgt.addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	if tgt.caPEM != nil {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACertBytes: tgt.caPEM}); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.ClearNamespace()
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c, nil
}

// client is newClient for tests.
func client(t *testing.T, token string) *api.Client {
	t.Helper()
	c, err := tg.newClient(token)
	if err != nil {
		t.Fatalf("create client: %v", err)
	}
	return c
}

// rootClient returns a client with the admin token.
func rootClient(t *testing.T) *api.Client {
	t.Helper()
	return client(t, tg.rootToken)
}

// now is the target's time: the test clock, or the wall clock.
func (tgt *target) now() time.Time {
	if tgt.clock != nil {
		return tgt.clock.Now()
	}
	return time.Now()
}

// advance lets d pass on the target: it moves the test clock, or sleeps
// against a real server. Tests that call it must not run in parallel.
func (tgt *target) advance(d time.Duration) {
	if tgt.clock != nil {
		tgt.clock.Advance(d)
		return
	}
	time.Sleep(d)
}

// responseError returns err as an *api.ResponseError or fails t.
func responseError(t *testing.T, err error) *api.ResponseError {
	t.Helper()
	if err == nil {
		t.Fatal("request succeeded, want an OpenBao error response")
	}
	var respErr *api.ResponseError
	if !errors.As(err, &respErr) {
		t.Fatalf("error %v (%T) is not an *api.ResponseError", err, err)
	}
	return respErr
}

// wantResponseError checks the status and the errors list of err.
func wantResponseError(t *testing.T, err error, status int, messages ...string) {
	t.Helper()
	respErr := responseError(t, err)
	if respErr.StatusCode != status {
		t.Errorf("status = %d, want %d (errors %q)", respErr.StatusCode, status, respErr.Errors)
	}
	if messages == nil {
		messages = []string{}
	}
	got := respErr.Errors
	if got == nil {
		got = []string{}
	}
	if strings.Join(got, "\x00") != strings.Join(messages, "\x00") || len(got) != len(messages) {
		t.Errorf("errors = %q, want %q", got, messages)
	}
}

func randomSuffix() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
