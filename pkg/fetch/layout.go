package fetch

import (
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// layout places the secrets read for items into files and collects the
// leases of dynamic items.
func layout(s *spec.Spec, items []spec.Item, secrets []*bao.Secret, now time.Time) (*Result, error) {
	result := &Result{}
	seenLeases := make(map[string]bool)

	for i, item := range items {
		sec := secrets[i]
		files, err := itemFiles(s, item, sec)
		if err != nil {
			return nil, err
		}
		result.Files = append(result.Files, files...)

		if sec.LeaseID != "" && !seenLeases[sec.LeaseID] {
			seenLeases[sec.LeaseID] = true
			result.Leases = append(result.Leases, Lease{
				ID: sec.LeaseID, Key: DynamicKey(item.Path, item.Data), Path: item.Path,
				Duration: sec.LeaseDuration, Renewable: sec.Renewable, Issued: now,
			})
		}
	}

	names := make([]string, len(result.Files))
	for i, f := range result.Files {
		names[i] = f.Path
	}
	if err := spec.CheckCollisions(names); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLayout, err)
	}
	return result, nil
}

func itemFiles(s *spec.Spec, item spec.Item, sec *bao.Secret) ([]tmpfs.File, error) {
	mode := os.FileMode(s.ItemMode(item))

	switch {
	case item.Field != "":
		data, ok := sec.Field(item.Field)
		if !ok {
			return nil, fmt.Errorf("%w: secret %s has no field %q (it has %s): fix \"field\"",
				ErrLayout, item.Path, item.Field, quoteAll(sec.Fields()))
		}
		return []tmpfs.File{{Path: item.File, Data: data.Reveal(), Mode: mode}}, nil

	case item.Format == spec.FormatJSON:
		data, err := sec.JSON()
		if err != nil {
			return nil, fmt.Errorf("%w: secret %s: %w", ErrLayout, item.Path, err)
		}
		return []tmpfs.File{{Path: item.File, Data: data.Reveal(), Mode: mode}}, nil

	default:
		fields := sec.Fields()
		if len(fields) == 0 {
			return nil, fmt.Errorf("%w: secret %s has no fields", ErrLayout, item.Path)
		}
		files := make([]tmpfs.File, 0, len(fields))
		for _, field := range fields {
			if err := spec.ValidateFileName(field); err != nil || strings.Contains(field, "/") {
				return nil, fmt.Errorf("%w: field %q of secret %s is not a portable file name: select it with \"field\" and name it with \"file\"",
					ErrLayout, field, item.Path)
			}
			data, _ := sec.Field(field)
			files = append(files, tmpfs.File{Path: path.Join(item.Dir, field), Data: data.Reveal(), Mode: mode})
		}
		return files, nil
	}
}

func quoteAll(names []string) string {
	if len(names) == 0 {
		return "no fields"
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return "fields " + strings.Join(quoted, ", ")
}
