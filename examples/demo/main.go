// Command demo runs Phantom's main job on this machine with nothing else
// installed: it starts an OpenBao (the in-process test server unless
// PHANTOM_OPENBAO_ADDR names a real one), starts phantom-node, and
// publishes the volume of examples/pod.yaml the way kubelet would. It must
// run as root, because phantom-node mounts a real tmpfs.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/spec"
)

const (
	audience  = "openbao"
	issuerURL = "https://kubernetes.default.svc.cluster.local"
)

func main() {
	nodeBinary := flag.String("node-binary", "bin/phantom-node", "path of the phantom-node binary")
	podFile := flag.String("pod", "examples/pod.yaml", "pod manifest whose Phantom volume the demo publishes")
	flag.Parse()

	if err := run(*nodeBinary, *podFile); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo finished: publish, update and unpublish all worked")
}

func run(nodeBinary, podFile string) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo mounts a real tmpfs and must run as root")
	}
	// Ctrl-C or SIGTERM cancels ctx, so the deferred clean-up below still
	// unpublishes the volume and stops phantom-node.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	pod, volume, err := loadPod(podFile)
	if err != nil {
		return err
	}
	workDir, err := os.MkdirTemp("", "phantom-demo-")
	if err != nil {
		return fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(workDir)

	step("1. OpenBao")
	bao, err := startOpenBao(ctx, pod, volume.CSI.VolumeAttributes[spec.AttrRole])
	if err != nil {
		return err
	}
	defer bao.close()

	step("2. phantom-node")
	socket := filepath.Join(workDir, "csi.sock")
	// The sealed cache must live on a tmpfs, as /run/phantom is on a node.
	stateDir := filepath.Join(workDir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := unix.Mount("phantom-demo-state", stateDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=16m,mode=0700"); err != nil {
		return fmt.Errorf("mount tmpfs for the state directory: %w", err)
	}
	defer unix.Unmount(stateDir, 0)
	node, err := startNode(nodeBinary, socket, stateDir, bao)
	if err != nil {
		return err
	}
	defer node.stop()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to phantom-node: %w", err)
	}
	defer conn.Close()
	client := csi.NewNodeClient(conn)
	if err := waitReady(ctx, conn); err != nil {
		return fmt.Errorf("%w\nphantom-node output:\n%s", err, node.output())
	}
	fmt.Printf("phantom-node serves CSI on %s\n", socket)

	step("3. NodePublishVolume, as kubelet calls it for " + pod.Namespace + "/" + pod.Name)
	req, err := kubeletRequest(pod, volume, bao.issuer, workDir)
	if err != nil {
		return err
	}
	// kubelet creates the volume's directory; the driver creates the target.
	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o750); err != nil {
		return err
	}
	if _, err := client.NodePublishVolume(ctx, req); err != nil {
		return fmt.Errorf("NodePublishVolume: %w\nphantom-node output:\n%s", err, node.output())
	}
	unpublished := false
	defer func() {
		if !unpublished {
			cleanupCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = client.NodeUnpublishVolume(cleanupCtx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
		}
	}()
	if err := show(req.TargetPath); err != nil {
		return err
	}

	step("4. Update the secret in OpenBao and republish (kubelet republishes about every minute)")
	published := time.Now()
	before, _ := os.Readlink(filepath.Join(req.TargetPath, "..data"))
	if err := bao.writeDBSecret(ctx); err != nil {
		return err
	}
	fmt.Println("wrote a new random password to secret/payments/db")
	if _, err := client.NodePublishVolume(ctx, req); err != nil {
		return fmt.Errorf("republish: %w", err)
	}
	if now, _ := os.Readlink(filepath.Join(req.TargetPath, "..data")); now != before {
		return errors.New("a republish before the refresh interval changed the content")
	}
	interval, err := time.ParseDuration(volume.CSI.VolumeAttributes[spec.AttrRefreshInterval])
	if err != nil {
		return fmt.Errorf("volume attribute %s: %w", spec.AttrRefreshInterval, err)
	}
	fmt.Printf("republished at once: nothing due, content unchanged, no OpenBao call; waiting for the refresh interval of %s\n", interval)
	select {
	case <-time.After(time.Until(published.Add(interval + time.Second))):
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := client.NodePublishVolume(ctx, req); err != nil {
		return fmt.Errorf("republish: %w", err)
	}
	after, _ := os.Readlink(filepath.Join(req.TargetPath, "..data"))
	fmt.Printf("..data moved atomically from %s to %s\n", before, after)
	if before == after {
		return errors.New("republish after the refresh interval did not swap in new content")
	}
	if err := show(req.TargetPath); err != nil {
		return err
	}

	step("5. NodeUnpublishVolume")
	if _, err := client.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume: %w", err)
	}
	unpublished = true
	line, err := mountInfoLine(req.TargetPath)
	if err != nil {
		return err
	}
	if line != "" {
		return fmt.Errorf("target is still mounted after unpublish: %s", line)
	}
	if _, err := os.Stat(req.TargetPath); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("target %s still exists after unpublish", req.TargetPath)
	}
	fmt.Println("tmpfs unmounted and target removed")

	step("phantom-node log")
	fmt.Print(node.output())
	return nil
}

func loadPod(path string) (*corev1.Pod, *corev1.Volume, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read pod manifest: %w", err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		return nil, nil, fmt.Errorf("parse pod manifest %s: %w", path, err)
	}
	for i := range pod.Spec.Volumes {
		if v := &pod.Spec.Volumes[i]; v.CSI != nil && v.CSI.Driver == "secrets.phantom.dev" {
			return &pod, v, nil
		}
	}
	return nil, nil, fmt.Errorf("pod manifest %s has no csi volume of driver secrets.phantom.dev", path)
}

// kubeletRequest builds the NodePublishVolumeRequest kubelet sends for an
// inline volume: pod info, a fresh service-account token for the audience,
// the pod's fsGroup and the volume's attributes.
func kubeletRequest(pod *corev1.Pod, volume *corev1.Volume, issuer *baotest.Issuer, workDir string) (*csi.NodePublishVolumeRequest, error) {
	podUID := randomUUID()
	token, err := issuer.Sign(baotest.PodIdentity{
		Namespace: pod.Namespace, ServiceAccount: pod.Spec.ServiceAccountName, ServiceAccountUID: randomUUID(),
		PodName: pod.Name, PodUID: podUID, NodeName: "demo-node",
	}, []string{audience}, 10*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("sign service-account token: %w", err)
	}
	tokens, _ := json.Marshal(map[string]any{audience: map[string]string{
		"token": token, "expirationTimestamp": time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339),
	}})

	attrs := map[string]string{
		spec.KubeletPodName:        pod.Name,
		spec.KubeletPodNamespace:   pod.Namespace,
		spec.KubeletPodUID:         podUID,
		spec.KubeletServiceAccount: pod.Spec.ServiceAccountName,
		spec.KubeletEphemeral:      "true",
		spec.KubeletTokens:         string(tokens),
	}
	for k, v := range volume.CSI.VolumeAttributes {
		attrs[k] = v
	}

	mount := &csi.VolumeCapability_MountVolume{}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		mount.VolumeMountGroup = strconv.FormatInt(*sc.FSGroup, 10)
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-" + podUID,
		TargetPath: filepath.Join(workDir, "pods", podUID, "volumes", "kubernetes.io~csi", volume.Name, "mount"),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: mount},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		Readonly:      volume.CSI.ReadOnly != nil && *volume.CSI.ReadOnly,
		VolumeContext: attrs,
	}, nil
}

// show prints the mountinfo line of target and its files with owner, mode
// and a digest of the content (never the content itself).
func show(target string) error {
	line, err := mountInfoLine(target)
	if err != nil {
		return err
	}
	if line == "" {
		return fmt.Errorf("no mount at %s in /proc/self/mountinfo", target)
	}
	fmt.Printf("/proc/self/mountinfo: %s\n", line)

	// The visible names are symlinks into ..data; walk the directory it
	// points to and print the names a container reads.
	data, err := filepath.EvalSymlinks(filepath.Join(target, "..data"))
	if err != nil {
		return fmt.Errorf("resolve ..data: %w", err)
	}
	return filepath.WalkDir(data, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(data, path)
		info, err := os.Stat(path)
		if err != nil || info.IsDir() {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		digest := sha256.Sum256(data)
		fmt.Printf("  %s  uid=%d gid=%d  %4d bytes  sha256:%s  %s\n",
			info.Mode().Perm(), st.Uid, st.Gid, len(data), hex.EncodeToString(digest[:6]), rel)
		return nil
	})
}

func mountInfoLine(target string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if fields := strings.Fields(scanner.Text()); len(fields) > 4 && fields[4] == target {
			return scanner.Text(), nil
		}
	}
	return "", scanner.Err()
}

func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	identity := csi.NewIdentityClient(conn)
	for {
		resp, err := identity.Probe(ctx, &csi.ProbeRequest{})
		if err == nil && resp.GetReady().GetValue() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("phantom-node did not become ready: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func step(title string) {
	fmt.Printf("\n== %s\n", title)
}

func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
