// Command render writes the plain manifests of deploy/ from the Helm chart,
// through Helm's Go packages, so that no helm binary is needed:
//
//	go run ./tests/chart/cmd/render -f deploy/values.yaml -o deploy/phantom.yaml
//
// With -check it compares the file named by -o with a fresh render instead of
// writing it, and exits with status 1 when they differ.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/phantom-sec/phantom/tests/chart/render"
)

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	chartDir := fs.String("chart", "charts/phantom", "directory of the Helm chart")
	release := fs.String("release", render.DefaultReleaseName, "Helm release name")
	namespace := fs.String("namespace", render.DefaultNamespace, "namespace of the release")
	output := fs.String("o", "", "output file; standard output when empty")
	check := fs.Bool("check", false, "compare the file named by -o with a fresh render instead of writing it")
	var valuesFiles, sets stringList
	fs.Var(&valuesFiles, "f", "values file, repeatable; later files win")
	fs.Var(&sets, "set", "value assignment such as openbao.address=https://bao:8200, repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: pass values with -f or -set", fs.Args())
	}
	if *check && *output == "" {
		return errors.New("-check needs -o, the file to compare")
	}

	values := map[string]any{}
	if err := render.SetValues(values, sets...); err != nil {
		return err
	}
	manifests, err := render.Deploy(render.Options{
		ChartDir:    *chartDir,
		ReleaseName: *release,
		Namespace:   *namespace,
		Values:      values,
	}, valuesFiles...)
	if err != nil {
		return err
	}

	switch {
	case *output == "":
		_, err = os.Stdout.WriteString(manifests)
		return err
	case *check:
		current, err := os.ReadFile(*output)
		if err != nil {
			return fmt.Errorf("read manifests to check: %w", err)
		}
		if !bytes.Equal(current, []byte(manifests)) {
			return fmt.Errorf("%s is stale: run \"make manifests\" and commit the result", *output)
		}
		return nil
	default:
		return os.WriteFile(*output, []byte(manifests), 0o644)
	}
}
