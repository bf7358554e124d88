// Package version holds the build version, set by the linker:
// -ldflags "-X github.com/phantom-sec/phantom/pkg/version.Version=v0.1.0".
package version

// Version is the release of this build.
var Version = "v0.1.0-dev"
