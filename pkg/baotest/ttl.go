package baotest

import (
	"errors"
	"fmt"
	"time"
)

// ttlInput carries the inputs of OpenBao's lease TTL calculation.
type ttlInput struct {
	now          time.Time
	increment    time.Duration
	backendTTL   time.Duration
	period       time.Duration
	backendMax   time.Duration
	explicitMax  time.Duration
	mountDefault time.Duration
	mountMax     time.Duration
	start        time.Time // issue time; zero for a new lease
}

var errPastMaxTTL = errors.New("past the max TTL, cannot renew")

// calculateTTL follows OpenBao's rule: the increment, else the backend TTL,
// else the mount default; never past start plus the smallest max TTL. Times
// are truncated to seconds, so warnings read like OpenBao's ("5m59s").
func calculateTTL(in ttlInput) (time.Duration, []string, error) {
	now := in.now.Truncate(time.Second)
	start := now
	if !in.start.IsZero() {
		start = in.start.Truncate(time.Second)
	}

	maxTTL := in.mountMax
	if in.backendMax > 0 && in.backendMax < maxTTL {
		maxTTL = in.backendMax
	}
	if in.explicitMax > 0 && in.explicitMax < maxTTL {
		maxTTL = in.explicitMax
	}

	var warnings []string
	var ttl time.Duration
	var maxValid time.Time
	switch {
	case in.period > 0:
		ttl = in.period
		if ttl > maxTTL {
			warnings = append(warnings, fmt.Sprintf("period of %q exceeded the effective max_ttl of %q; period value is capped accordingly",
				humanDuration(ttl), humanDuration(maxTTL)))
			ttl = maxTTL
		}
		if in.explicitMax > 0 {
			maxValid = start.Add(in.explicitMax)
		}
	default:
		switch {
		case in.increment > 0:
			ttl = in.increment
		case in.backendTTL > 0:
			ttl = in.backendTTL
		default:
			ttl = in.mountDefault
		}
		maxValid = start.Add(maxTTL)
	}

	if maxValid.IsZero() {
		return ttl, warnings, nil
	}
	remaining := maxValid.Sub(now)
	if remaining <= 0 {
		return 0, nil, errPastMaxTTL
	}
	if remaining < ttl {
		warnings = append(warnings, fmt.Sprintf("TTL of %q exceeded the effective max_ttl of %q; TTL value is capped accordingly",
			humanDuration(ttl), humanDuration(remaining)))
		ttl = remaining
	}
	return ttl, warnings, nil
}
