package baotest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

// Example logs a pod in with its service-account token and reads a KV
// secret, as Phantom's node plugin does.
func Example() {
	ctx := context.Background()
	srv, err := baotest.Start(baotest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	root, _ := srv.NewClient(srv.RootToken())
	issuer, _ := baotest.NewIssuer("https://kubernetes.default.svc")
	_ = baotest.EnableJWTAuth(ctx, root, "jwt", issuer.URL(), issuer.PublicKeyPEM())
	_ = baotest.WriteJWTRole(ctx, root, "jwt", "shop", baotest.JWTRole{
		BoundAudiences: []string{"openbao"},
		BoundClaims:    map[string]any{"/kubernetes.io/namespace": "shop"},
		TokenPolicies:  []string{"shop"},
	})
	_ = baotest.WritePolicy(ctx, root, "shop", `path "secret/data/shop/*" { capabilities = ["read"] }`)
	_ = baotest.EnableKV2(ctx, root, "secret")
	_, _ = baotest.PutKV2(ctx, root, "secret", "shop/db", map[string]any{"user": "shop"})

	pod := baotest.PodIdentity{Namespace: "shop", ServiceAccount: "web", PodName: "web-0"}
	jwt, _ := issuer.Sign(pod, []string{"openbao"}, time.Hour)
	anon, _ := srv.NewClient("")
	login, err := anon.Logical().Write("auth/jwt/login", map[string]any{"role": "shop", "jwt": jwt})
	if err != nil {
		fmt.Println(err)
		return
	}

	tenant, _ := srv.NewClient(login.Auth.ClientToken)
	secret, err := tenant.Logical().Read("secret/data/shop/db")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(secret.Data["data"].(map[string]any)["user"], srv.Count(baotest.OpLogin))
	// Output: shop 1
}
