package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phantom-sec/phantom/driver"
	"github.com/phantom-sec/phantom/pkg/cache"
	"github.com/phantom-sec/phantom/pkg/jwks"
	"github.com/phantom-sec/phantom/pkg/keyring"
	"github.com/phantom-sec/phantom/pkg/state"
)

// persistence is the daemon's state: the cache, the volume index and the
// offline token verifier, whose keys live in the sealed cache.
type persistence struct {
	cache    *cache.Cache
	index    *state.Store
	verifier driver.TokenVerifier
}

// openState opens the volume index and the cache in the state directory.
// The sealed tier needs the directory on a tmpfs or ramfs, and the kernel
// keyring. Without either it is disabled with a loud log line, because
// encrypted secrets still do not belong on a disk.
func openState(cfg *config, log *slog.Logger, reg prometheus.Registerer) (*persistence, error) {
	if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", cfg.stateDir, err)
	}
	index, err := state.Open(filepath.Join(cfg.stateDir, "volumes"))
	if err != nil {
		return nil, err
	}

	sealed := openSealed(cfg, log)
	var store jwks.Store
	if sealed != nil {
		store = sealed
	}
	return &persistence{
		cache:    cache.New(cache.Config{Sealed: sealed, Grace: cfg.gracePeriod, Logger: log, Registerer: reg}),
		index:    index,
		verifier: newVerifier(cfg, store, log),
	}, nil
}

func openSealed(cfg *config, log *slog.Logger) *cache.Sealed {
	fsType, err := memoryFilesystem(cfg.stateDir)
	if err != nil {
		log.Error("SEALED CACHE DISABLED: the state directory is not on a memory filesystem, and cached secrets, even encrypted, must not reach a disk; "+
			"a restarted daemon cannot start new pods while OpenBao is unreachable. Mount a tmpfs there (the host's /run is one on most distributions)",
			"state_dir", cfg.stateDir, "error", err.Error())
		return nil
	}
	key, created, err := keyring.LoadOrCreate(cfg.keyName, cache.KeySize)
	if err != nil {
		log.Error("SEALED CACHE DISABLED: failed to load or create the key in the kernel keyring; allow keyctl, add_key and request_key in the daemon's seccomp profile",
			"key_name", cfg.keyName, "error", err.Error())
		return nil
	}
	sealed, err := cache.OpenSealed(filepath.Join(cfg.stateDir, "cache"), key, log)
	clear(key)
	if err != nil {
		log.Error("SEALED CACHE DISABLED", "error", err.Error())
		return nil
	}
	log.Info("sealed cache ready", "state_dir", cfg.stateDir, "filesystem", fsType, "new_key", created)
	return sealed
}

// newVerifier returns the offline token verifier, or nil when no source of
// the cluster's keys is configured or reachable.
func newVerifier(cfg *config, store jwks.Store, log *slog.Logger) driver.TokenVerifier {
	var source jwks.Source
	switch {
	case cfg.jwksFile != "":
		source = jwks.FileSource{Path: cfg.jwksFile}
	case cfg.jwksURL != "":
		client, err := jwks.NewHTTPClient(cfg.jwksCAFile)
		if err != nil {
			log.Error("offline token verification disabled", "error", err.Error())
			return nil
		}
		source = &jwks.URLSource{URL: cfg.jwksURL, Client: client, TokenFile: cfg.jwksTokenFile}
	default:
		inCluster, err := jwks.InClusterSource()
		if err != nil {
			log.Warn("offline token verification disabled: every new pod logs in to OpenBao and no cached copy is served to it; "+
				"set --service-account-jwks-url or --service-account-jwks-file", "error", err.Error())
			return nil
		}
		source = inCluster
	}
	return jwks.New(jwks.Config{Source: source, Store: store, Issuer: cfg.saIssuer, Logger: log})
}

var errNotMemory = errors.New("not a tmpfs or ramfs")
