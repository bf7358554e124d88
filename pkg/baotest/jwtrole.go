package baotest

import (
	"maps"
	"slices"
	"time"
)

// writeRole creates or updates a role, validating as OpenBao does.
func (b *jwtBackend) writeRole(r *request, name string) (*response, error) {
	role := &jwtRole{boundClaimsType: "string"}
	if old := b.roles[name]; old != nil {
		copied := *old
		role = &copied
	}

	roleType, err := fieldString(r.data, "role_type")
	if err != nil {
		return nil, err
	}
	if roleType == "" {
		roleType = "oidc"
	}
	if roleType != "jwt" && roleType != "oidc" {
		return nil, badRequest("invalid 'role_type': %s", roleType)
	}
	role.roleType = roleType

	if err := parseTokenParams(r.data, &role.token); err != nil {
		return nil, err
	}
	if err := parseJWTRoleClaims(r.data, role); err != nil {
		return nil, err
	}
	if err := validateJWTRole(role); err != nil {
		return nil, err
	}
	b.roles[name] = role
	return nil, nil
}

// parseJWTRoleClaims reads the claim-related role fields.
func parseJWTRoleClaims(data map[string]any, role *jwtRole) error {
	for _, key := range []string{"groups_claim", "token_policies_template_claims", "oidc_scopes"} {
		if _, ok := data[key]; ok {
			return unsupportedByTestServer(key)
		}
	}
	if err := parseJWTBindings(data, role); err != nil {
		return err
	}
	if err := parseClaimMappings(data, role); err != nil {
		return err
	}

	var err error
	if v, ok := data["user_claim"]; ok && v != nil {
		if role.userClaim, err = fieldString(data, "user_claim"); err != nil {
			return err
		}
	}
	if role.userClaimJSONPointer, err = fieldBool(data, "user_claim_json_pointer", role.userClaimJSONPointer); err != nil {
		return err
	}
	if list, ok, err := fieldStrings(data, "allowed_redirect_uris"); err != nil {
		return err
	} else if ok {
		role.allowedRedirectURIs = list
	}
	return parseJWTLeeways(data, role)
}

func parseJWTBindings(data map[string]any, role *jwtRole) error {
	if list, ok, err := fieldStrings(data, "bound_audiences"); err != nil {
		return err
	} else if ok {
		role.boundAudiences = list
	}
	if _, ok := data["bound_subject"]; ok {
		subject, err := fieldString(data, "bound_subject")
		if err != nil {
			return err
		}
		role.boundSubject = subject
	}

	claimsType, err := fieldString(data, "bound_claims_type")
	if err != nil {
		return err
	}
	if claimsType != "" {
		role.boundClaimsType = claimsType
	}
	if role.boundClaimsType != "string" && role.boundClaimsType != "glob" {
		return badRequest("invalid 'bound_claims_type': %s", role.boundClaimsType)
	}

	bound, ok, err := fieldMap(data, "bound_claims")
	if err != nil || !ok {
		return err
	}
	for _, values := range bound {
		list, isList := normalizeList(values)
		if !isList {
			return badRequest("claim is not a string or list: %v", values)
		}
		if role.boundClaimsType == "glob" && slices.ContainsFunc(list, func(v any) bool { _, s := v.(string); return !s }) {
			return badRequest("claim is not a string: %v", values)
		}
	}
	role.boundClaims = bound
	return nil
}

func parseClaimMappings(data map[string]any, role *jwtRole) error {
	mappings, ok, err := fieldStringMap(data, "claim_mappings")
	if err != nil || !ok {
		return err
	}
	targets := map[string]bool{}
	for _, claim := range sortedKeys(mappings) {
		key := mappings[claim]
		if slices.Contains(reservedMetadata, key) {
			return badRequest("metadata key %q is reserved and may not be a mapping destination", key)
		}
		if targets[key] {
			return badRequest("multiple keys are mapped to metadata key %q", key)
		}
		targets[key] = true
	}
	role.claimMappings = maps.Clone(mappings)
	return nil
}

func parseJWTLeeways(data map[string]any, role *jwtRole) error {
	for key, dst := range map[string]*time.Duration{
		"expiration_leeway": &role.expirationLeeway,
		"not_before_leeway": &role.notBeforeLeeway,
		"clock_skew_leeway": &role.clockSkewLeeway,
	} {
		n, err := fieldInt(data, key, int(*dst/time.Second))
		if err != nil {
			return err
		}
		*dst = time.Duration(n) * time.Second
	}
	return nil
}

func validateJWTRole(role *jwtRole) error {
	if role.userClaim == "" {
		return badRequest("a user claim must be defined on the role")
	}
	if role.roleType == "oidc" && len(role.allowedRedirectURIs) == 0 {
		return badRequest("'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified.")
	}
	if role.roleType != "oidc" && len(role.boundAudiences) == 0 && role.boundSubject == "" && len(role.boundClaims) == 0 {
		return badRequest("must have at least one bound constraint when creating/updating a role")
	}
	return checkTokenTTLs(role.token, "ttl should not be greater than max ttl")
}

func (b *jwtBackend) readRole(name string) (*response, error) {
	role := b.roles[name]
	if role == nil {
		return nil, nil
	}
	data := role.token.fields()
	maps.Copy(data, map[string]any{
		"role_type":               role.roleType,
		"bound_audiences":         nonNilStrings(role.boundAudiences),
		"bound_subject":           role.boundSubject,
		"bound_claims":            role.boundClaims,
		"bound_claims_type":       role.boundClaimsType,
		"user_claim":              role.userClaim,
		"user_claim_json_pointer": role.userClaimJSONPointer,
		"claim_mappings":          role.claimMappings,
		"allowed_redirect_uris":   nonNilStrings(role.allowedRedirectURIs),
		"expiration_leeway":       seconds(role.expirationLeeway),
		"not_before_leeway":       seconds(role.notBeforeLeeway),
		"clock_skew_leeway":       seconds(role.clockSkewLeeway),
		"groups_claim":            "",
	})
	return &response{data: data}, nil
}

func nonNilStrings(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}
