package baotest

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/google/uuid"
)

// entity is an identity: one per (auth mount, alias name), created at the
// first login and reused after, as OpenBao's identity store does.
type entity struct {
	id       string
	name     string
	metadata map[string]string
	aliases  map[string]*alias // by mount accessor
}

// alias links an entity to a name within one auth mount.
type alias struct {
	id            string
	name          string
	mountAccessor string
	metadata      map[string]string
}

// entityForAliasLocked returns the entity that owns the alias name on m,
// creating it on first use, and records the alias metadata of this login.
func (s *Server) entityForAliasLocked(m *mount, name string, metadata map[string]string) *entity {
	for _, e := range s.entities {
		if a := e.aliases[m.accessor]; a != nil && a.name == name {
			a.metadata = maps.Clone(metadata)
			return e
		}
	}

	e := &entity{
		id:      uuid.NewString(),
		name:    "entity_" + randomHex(4),
		aliases: map[string]*alias{},
	}
	e.aliases[m.accessor] = &alias{
		id:            uuid.NewString(),
		name:          name,
		mountAccessor: m.accessor,
		metadata:      maps.Clone(metadata),
	}
	s.entities[e.id] = e
	return e
}

// Errors of template rendering; any of them leaves the path out of the ACL.
var (
	errUnbalancedTemplate = errors.New("unbalanced templating characters")
	errTemplateNoValue    = errors.New("no value could be found for one of the template directives")
	errTemplateNoEntity   = errors.New("string contains entity template directives but no entity was provided")
)

// checkTemplate validates the braces of a policy path and reports whether
// it is templated.
func checkTemplate(path string) (bool, error) {
	_, templated, err := expandTemplate(path, func(string) (string, error) { return "", nil })
	return templated, err
}

// renderTemplate fills the {{identity...}} directives of path from ent. A
// substituted value may not contain "/" (unless allowSlashes) nor "*" or
// "+" (unless allowWildcards), so an alias name cannot widen a path.
func renderTemplate(path string, ent *entity, allowSlashes, allowWildcards bool) (string, error) {
	out, _, err := expandTemplate(path, func(directive string) (string, error) {
		value, err := identityValue(directive, ent)
		if err != nil {
			return "", err
		}
		if !allowSlashes && strings.Contains(value, "/") {
			return "", fmt.Errorf("template substitution contains forbidden value %q", "/")
		}
		if !allowWildcards && strings.ContainsAny(value, "*+") {
			return "", fmt.Errorf("template substitution contains a forbidden wildcard")
		}
		return value, nil
	})
	return out, err
}

// expandTemplate replaces each {{ directive }} in s with fill(directive).
func expandTemplate(s string, fill func(string) (string, error)) (string, bool, error) {
	pieces := strings.Split(s, "{{")
	if strings.Contains(pieces[0], "}}") {
		return "", false, errUnbalancedTemplate
	}
	if len(pieces) == 1 {
		return s, false, nil
	}

	var b strings.Builder
	b.WriteString(pieces[0])
	for _, piece := range pieces[1:] {
		parts := strings.Split(piece, "}}")
		if len(parts) != 2 {
			return "", false, errUnbalancedTemplate
		}
		value, err := fill(strings.TrimSpace(parts[0]))
		if err != nil {
			return "", true, err
		}
		b.WriteString(value)
		b.WriteString(parts[1])
	}
	return b.String(), true, nil
}

// identityValue resolves one directive: identity.entity.id, .name,
// .metadata.<key>, or .aliases.<mount accessor>.id|name|metadata.<key>.
func identityValue(directive string, ent *entity) (string, error) {
	rest, ok := strings.CutPrefix(directive, "identity.entity.")
	if !ok {
		return "", errTemplateNoValue
	}
	if ent == nil {
		return "", errTemplateNoEntity
	}

	switch {
	case rest == "id":
		return nonEmpty(ent.id)
	case rest == "name":
		return nonEmpty(ent.name)
	case strings.HasPrefix(rest, "metadata."):
		return mapValue(ent.metadata, strings.TrimPrefix(rest, "metadata."))
	case strings.HasPrefix(rest, "aliases."):
		return aliasValue(strings.TrimPrefix(rest, "aliases."), ent)
	}
	return "", errTemplateNoValue
}

func aliasValue(selector string, ent *entity) (string, error) {
	accessor, field, ok := strings.Cut(selector, ".")
	if !ok {
		return "", errors.New("invalid alias selector")
	}
	a := ent.aliases[accessor]
	if a == nil {
		return "", errors.New("alias not found")
	}

	switch {
	case field == "id":
		return nonEmpty(a.id)
	case field == "name":
		return nonEmpty(a.name)
	case strings.HasPrefix(field, "metadata."):
		return mapValue(a.metadata, strings.TrimPrefix(field, "metadata."))
	}
	return "", errTemplateNoValue
}

func nonEmpty(v string) (string, error) {
	if v == "" {
		return "", errTemplateNoValue
	}
	return v, nil
}

func mapValue(m map[string]string, key string) (string, error) {
	v, ok := m[key]
	if !ok {
		return "", errTemplateNoValue
	}
	return v, nil
}
