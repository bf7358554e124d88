package tmpfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// currentDir returns the name of the content directory "..data" points at
// in target, or "" when there is no "..data" yet.
func currentDir(target string) (string, error) {
	dest, err := os.Readlink(filepath.Join(target, dataLink))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read link %s in %s: %w", dataLink, target, err)
	}
	if !isContentDirName(dest) {
		return "", fmt.Errorf("link %s in %s points at %q, not at a content directory of the volume; remove the link", dataLink, target, dest)
	}
	return dest, nil
}

// staleEntries lists the reserved entries of the volume root at target that
// no reader needs: every entry starting with ".." except "..data", the
// directory it points at, and replaced content directories younger than
// grace.
//
// Write stamps a directory's modification time when it replaces it, so the
// age counts from then. That list covers the temporary link "..data_tmp",
// directories that a failed or crashed Write never published, and replaced
// directories past their grace. A modification time in the future (the
// clock was set back) counts as expired, so a clock change cannot keep old
// content for long.
func staleEntries(target string, grace time.Duration, now time.Time) ([]string, error) {
	current, err := currentDir(target)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", target, err)
	}

	var stale []string
	for _, entry := range entries {
		name := entry.Name()
		if !isReservedName(name) || name == dataLink || name == current {
			continue
		}
		if isContentDirName(name) && entry.IsDir() {
			info, err := entry.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("stat %s in %s: %w", name, target, err)
			}
			if age := now.Sub(info.ModTime()); age >= 0 && age < grace {
				continue
			}
		}
		stale = append(stale, name)
	}
	return stale, nil
}

// schedulePrune arranges for prune to run on target once the directory that
// the last write replaced has outlived the grace period. A later call for
// the same target postpones the run.
func (m *Mounter) schedulePrune(target string) {
	// The margin lets the age check in staleEntries see the grace as passed.
	delay := m.grace + 100*time.Millisecond

	m.pruneMu.Lock()
	defer m.pruneMu.Unlock()
	if timer, ok := m.pruneTimers[target]; ok {
		timer.Reset(delay)
		return
	}
	if m.pruneTimers == nil {
		m.pruneTimers = map[string]*time.Timer{}
	}
	m.pruneTimers[target] = time.AfterFunc(delay, func() { m.prune(target) })
}

func (m *Mounter) cancelPrune(target string) {
	m.pruneMu.Lock()
	defer m.pruneMu.Unlock()
	if timer, ok := m.pruneTimers[target]; ok {
		timer.Stop()
		delete(m.pruneTimers, target)
	}
}

// prune removes the stale entries of the Phantom tmpfs at target, making a
// read-only mount point writable for the removal. It runs on a timer, so it
// logs its errors instead of returning them.
func (m *Mounter) prune(target string) {
	m.pruneMu.Lock()
	delete(m.pruneTimers, target)
	m.pruneMu.Unlock()

	defer m.locks.lock(target)()
	log := m.logger.With(keyTarget, target)
	// When the volume was unmounted in the meantime there is nothing to
	// remove. A failed mountinfo read leaves the removal to the next write.
	if state, _, err := stateAt(target); err != nil || state != phantomMounted {
		return
	}
	stale, err := staleEntries(target, m.grace, time.Now())
	if err != nil {
		log.Warn("failed to list replaced content for removal, the next write retries", keyError, err)
		return
	}
	if len(stale) == 0 {
		return
	}

	w := &writer{target: target, log: log}
	err = m.whileWritable(target, false, func() error {
		var errs []error
		for _, name := range stale {
			errs = append(errs, w.removeEntry(name))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		log.Warn("failed to remove replaced content, the next write retries", keyError, err)
		return
	}
	log.Debug("removed replaced content", keyCount, len(stale))
}
