package baotest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// aclFrom parses policies and merges them as a token holding all of them.
func aclFrom(t *testing.T, ent *entity, texts ...string) *acl {
	t.Helper()
	a := newACL()
	for i, text := range texts {
		p, err := parsePolicy("p"+string(rune('a'+i)), text)
		if err != nil {
			t.Fatalf("parse policy %d: %v", i, err)
		}
		for _, rule := range p.rules {
			path := rule.path
			if p.templated {
				rendered, err := renderTemplate(path, ent, p.allowSlashes, p.allowWildcards)
				if err != nil {
					continue
				}
				path = rendered
			}
			a.add(path, rule.caps)
		}
	}
	return a
}

func TestACLMatching(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		policies []string
		path     string
		op       operation
		want     []string
	}{
		{
			name:     "exact beats glob",
			policies: []string{`path "secret/data/*" { capabilities = ["read"] }`, `path "secret/data/app" { capabilities = ["list"] }`},
			path:     "secret/data/app", op: opRead, want: []string{"list"},
		},
		{
			name:     "longest glob prefix wins",
			policies: []string{`path "secret/*" { capabilities = ["read"] } path "secret/data/*" { capabilities = ["update"] }`},
			path:     "secret/data/app", op: opRead, want: []string{"update"},
		},
		{
			name:     "glob matches inside a segment",
			policies: []string{`path "secret/data/app*" { capabilities = ["read"] }`},
			path:     "secret/data/apple/pie", op: opRead, want: []string{"read"},
		},
		{
			name:     "no rule means deny",
			policies: []string{`path "secret/data/app" { capabilities = ["read"] }`},
			path:     "secret/data/other", op: opRead, want: []string{"deny"},
		},
		{
			name:     "plus matches one segment",
			policies: []string{`path "secret/data/+/db" { capabilities = ["read"] }`},
			path:     "secret/data/payments/db", op: opRead, want: []string{"read"},
		},
		{
			name:     "plus does not span segments",
			policies: []string{`path "secret/data/+/db" { capabilities = ["read"] }`},
			path:     "secret/data/a/b/db", op: opRead, want: []string{"deny"},
		},
		{
			name:     "plus without glob needs equal length",
			policies: []string{`path "secret/data/+" { capabilities = ["read"] }`},
			path:     "secret/data/a/b", op: opRead, want: []string{"deny"},
		},
		{
			name:     "later wildcard wins",
			policies: []string{`path "foo/a*" { capabilities = ["read"] } path "foo/+" { capabilities = ["update"] }`},
			path:     "foo/abc", op: opRead, want: []string{"read"},
		},
		{
			name:     "later plus wins",
			policies: []string{`path "foo/bar/+/baz" { capabilities = ["read"] } path "foo/+/bar/baz" { capabilities = ["update"] }`},
			path:     "foo/bar/bar/baz", op: opRead, want: []string{"read"},
		},
		{
			name:     "exact ending beats glob",
			policies: []string{`path "foo/+/bar" { capabilities = ["read"] } path "foo/+/ba*" { capabilities = ["update"] }`},
			path:     "foo/x/bar", op: opRead, want: []string{"read"},
		},
		{
			name:     "plus beats glob at same position",
			policies: []string{`path "foo/+" { capabilities = ["read"] } path "foo/*" { capabilities = ["update"] }`},
			path:     "foo/x", op: opRead, want: []string{"read"},
		},
		{
			name:     "fewer plus segments win",
			policies: []string{`path "foo/+/bar/+" { capabilities = ["read"] } path "foo/+/+/baz" { capabilities = ["update"] }`},
			path:     "foo/a/bar/baz", op: opRead, want: []string{"read"},
		},
		{
			name:     "longer glob wins",
			policies: []string{`path "foo/+/bar/ba*" { capabilities = ["read"] } path "foo/+/bar/b*" { capabilities = ["update"] }`},
			path:     "foo/a/bar/baz", op: opRead, want: []string{"read"},
		},
		{
			name:     "capabilities of one path add up",
			policies: []string{`path "secret/data/app" { capabilities = ["read"] }`, `path "secret/data/app" { capabilities = ["update"] }`},
			path:     "secret/data/app", op: opRead, want: []string{"read", "update"},
		},
		{
			name:     "deny in any policy wins",
			policies: []string{`path "secret/data/app" { capabilities = ["read"] }`, `path "secret/data/app" { capabilities = ["deny"] }`},
			path:     "secret/data/app", op: opRead, want: []string{"deny"},
		},
		{
			name:     "specific deny beats broad grant",
			policies: []string{`path "secret/*" { capabilities = ["read"] } path "secret/data/billing/*" { capabilities = ["deny"] }`},
			path:     "secret/data/billing/db", op: opRead, want: []string{"deny"},
		},
		{
			name:     "list falls back to path without slash",
			policies: []string{`path "secret/metadata/app" { capabilities = ["list"] }`},
			path:     "secret/metadata/app/", op: opList, want: []string{"list"},
		},
		{
			name:     "list with glob",
			policies: []string{`path "secret/metadata/app/*" { capabilities = ["list"] }`},
			path:     "secret/metadata/app/", op: opList, want: []string{"list"},
		},
		{
			name:     "old policy shorthand",
			policies: []string{`path "secret/*" { policy = "read" }`},
			path:     "secret/data/x", op: opRead, want: []string{"list", "read"},
		},
		{
			name:     "leading slash is ignored",
			policies: []string{`path "/secret/data/x" { capabilities = ["read"] }`},
			path:     "secret/data/x", op: opRead, want: []string{"read"},
		},
		{
			name:     "json policy",
			policies: []string{`{"path": {"secret/data/x": {"capabilities": ["read"]}}}`},
			path:     "secret/data/x", op: opRead, want: []string{"read"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := aclFrom(t, nil, tt.policies...).capabilities(tt.path, tt.op).names()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("capabilities(%q) mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func TestCapSetAllows(t *testing.T) {
	t.Parallel()
	caps := capRead | capList
	for op, want := range map[operation]bool{opRead: true, opList: true, opUpdate: false, opCreate: false, opDelete: false} {
		if got := caps.allows(op); got != want {
			t.Errorf("allows(%s) = %v, want %v", op, got, want)
		}
	}
	if (capDeny | capRead).allows(opRead) {
		t.Error("deny with read allows read, want denied")
	}
}

func TestTemplatedPolicy(t *testing.T) {
	t.Parallel()
	ent := &entity{
		id:   "ent-id",
		name: "entity_1",
		aliases: map[string]*alias{
			"auth_jwt_1234": {name: "system:serviceaccount:payments:api", metadata: map[string]string{"namespace": "payments", "pod": "api-0"}},
		},
	}
	tests := []struct {
		name   string
		policy string
		path   string
		want   []string
	}{
		{
			name:   "alias metadata",
			policy: `path "secret/data/{{identity.entity.aliases.auth_jwt_1234.metadata.namespace}}/*" { capabilities = ["read"] }`,
			path:   "secret/data/payments/db", want: []string{"read"},
		},
		{
			name:   "other tenant denied",
			policy: `path "secret/data/{{identity.entity.aliases.auth_jwt_1234.metadata.namespace}}/*" { capabilities = ["read"] }`,
			path:   "secret/data/billing/db", want: []string{"deny"},
		},
		{
			name:   "entity name and id",
			policy: `path "kv/{{identity.entity.name}}/{{ identity.entity.id }}" { capabilities = ["read"] }`,
			path:   "kv/entity_1/ent-id", want: []string{"read"},
		},
		{
			name:   "missing metadata key leaves path out",
			policy: `path "secret/data/{{identity.entity.aliases.auth_jwt_1234.metadata.team}}/*" { capabilities = ["read"] }`,
			path:   "secret/data//db", want: []string{"deny"},
		},
		{
			name:   "unknown accessor leaves path out",
			policy: `path "secret/data/{{identity.entity.aliases.auth_k8s_0000.name}}" { capabilities = ["read"] }`,
			path:   "secret/data/", want: []string{"deny"},
		},
		{
			name:   "alias name with colons",
			policy: `path "secret/data/{{identity.entity.aliases.auth_jwt_1234.name}}" { capabilities = ["read"] }`,
			path:   "secret/data/system:serviceaccount:payments:api", want: []string{"read"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := aclFrom(t, ent, tt.policy).capabilities(tt.path, opRead).names()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("capabilities(%q) mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func TestRenderTemplateBlocksUnsafeValues(t *testing.T) {
	t.Parallel()
	ent := &entity{aliases: map[string]*alias{"acc": {name: "a/b", metadata: map[string]string{"glob": "x*"}}}}
	tests := []struct {
		name          string
		path          string
		slashes, wild bool
		want          string
		wantErr       bool
	}{
		{name: "slash blocked", path: "kv/{{identity.entity.aliases.acc.name}}", wantErr: true},
		{name: "slash allowed", path: "kv/{{identity.entity.aliases.acc.name}}", slashes: true, want: "kv/a/b"},
		{name: "wildcard blocked", path: "kv/{{identity.entity.aliases.acc.metadata.glob}}", wantErr: true},
		{name: "wildcard allowed", path: "kv/{{identity.entity.aliases.acc.metadata.glob}}", wild: true, want: "kv/x*"},
		{name: "no entity", path: "kv/{{identity.entity.name}}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := ent
			if tt.name == "no entity" {
				e = nil
			}
			got, err := renderTemplate(tt.path, e, tt.slashes, tt.wild)
			if (err != nil) != tt.wantErr {
				t.Fatalf("renderTemplate error = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("renderTemplate = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy string
		want   string
	}{
		{name: "invalid capability", policy: `path "a" { capabilities = ["reed"] }`, want: `path "a": invalid capability "reed"`},
		{name: "unknown top-level key", policy: `paths "a" { capabilities = ["read"] }`, want: `invalid key "paths"`},
		{name: "unknown path key", policy: `path "a" { capability = ["read"] }`, want: `invalid key "capability"`},
		{name: "plus then glob", policy: `path "a/+*" { capabilities = ["read"] }`, want: `invalid use of wildcards ('+*' is forbidden)`},
		{name: "unbalanced template", policy: `path "a/{{identity.entity.name" { capabilities = ["read"] }`, want: "unbalanced templating characters"},
		{name: "parameters unsupported", policy: `path "a" { capabilities = ["read"] allowed_parameters = { "x" = [] } }`, want: "allowed_parameters is not supported"},
		{name: "invalid old policy", policy: `path "a" { policy = "all" }`, want: `invalid policy "all"`},
		{name: "syntax error", policy: `path "a" { capabilities = [ }`, want: "failed to parse policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parsePolicy("p", tt.policy)
			if err == nil {
				t.Fatalf("parsePolicy(%q) succeeded, want error containing %q", tt.policy, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parsePolicy error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDefaultPolicyParses(t *testing.T) {
	t.Parallel()
	a := aclFrom(t, nil, defaultPolicyHCL)
	for path, want := range map[string]capSet{
		"auth/token/lookup-self": capRead,
		"auth/token/renew-self":  capUpdate,
		"sys/leases/renew":       capUpdate,
		"sys/leases/revoke":      0,
	} {
		if got := a.capabilities(path, opRead); got != want {
			t.Errorf("default policy on %s = %v, want %v", path, got.names(), want.names())
		}
	}
}

func TestCalculateTTL(t *testing.T) {
	t.Parallel()
	start := replayNow()
	tests := []struct {
		name     string
		in       ttlInput
		want     int64
		warnings int
		wantErr  bool
	}{
		{name: "backend ttl", in: ttlInput{now: start, backendTTL: 120e9, backendMax: 360e9, mountMax: systemMaxTTL, mountDefault: systemDefaultTTL}, want: 120},
		{name: "mount default", in: ttlInput{now: start, mountMax: 3600e9, mountDefault: 600e9}, want: 600},
		{name: "increment", in: ttlInput{now: start, increment: 300e9, backendTTL: 120e9, mountMax: systemMaxTTL}, want: 300},
		{name: "capped by max", in: ttlInput{now: start.Add(1e9), start: start, increment: 3600e9, backendMax: 360e9, mountMax: systemMaxTTL}, want: 359, warnings: 1},
		{name: "past max", in: ttlInput{now: start.Add(400e9), start: start, backendTTL: 60e9, backendMax: 360e9, mountMax: systemMaxTTL}, wantErr: true},
		{name: "period", in: ttlInput{now: start, period: 60e9, mountMax: systemMaxTTL}, want: 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ttl, warnings, err := calculateTTL(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("calculateTTL error = %v, want error %v", err, tt.wantErr)
			}
			if got := seconds(ttl); got != tt.want {
				t.Errorf("ttl = %ds, want %ds", got, tt.want)
			}
			if len(warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", warnings, tt.warnings)
			}
		})
	}
}

func replayNow() time.Time {
	return time.Date(2026, 12, 4, 20, 45, 36, 0, time.UTC)
}
