// Package kubernetes holds the example manifests of docs/kubernetes.md. This
// test parses every manifest as Kubernetes would (sigs.k8s.io/yaml, strict
// field names) and checks kinds, required fields and the references between
// them; cmd/etcd-backup checks that the agent knows every flag they pass.
package kubernetes

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type meta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

type secret struct {
	object
	Type       string            `json:"type"`
	StringData map[string]string `json:"stringData"`
}

type configMap struct {
	object
	Data map[string]string `json:"data"`
}

type serviceAccount struct {
	object
	AutomountServiceAccountToken *bool `json:"automountServiceAccountToken"`
}

type probe struct {
	HTTPGet *struct {
		Host string `json:"host"`
		Port int    `json:"port"`
		Path string `json:"path"`
	} `json:"httpGet"`
	InitialDelaySeconds int `json:"initialDelaySeconds"`
	PeriodSeconds       int `json:"periodSeconds"`
	TimeoutSeconds      int `json:"timeoutSeconds"`
	FailureThreshold    int `json:"failureThreshold"`
}

type container struct {
	Name            string   `json:"name"`
	Image           string   `json:"image"`
	ImagePullPolicy string   `json:"imagePullPolicy"`
	Args            []string `json:"args"`
	EnvFrom         []struct {
		ConfigMapRef *struct {
			Name string `json:"name"`
		} `json:"configMapRef"`
		SecretRef *struct {
			Name string `json:"name"`
		} `json:"secretRef"`
	} `json:"envFrom"`
	Env []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
		Protocol      string `json:"protocol"`
	} `json:"ports"`
	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `json:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		ReadOnly  bool   `json:"readOnly"`
	} `json:"volumeMounts"`
}

type volume struct {
	Name     string `json:"name"`
	HostPath *struct {
		Path string `json:"path"`
		Type string `json:"type"`
	} `json:"hostPath"`
	Secret *struct {
		SecretName  string `json:"secretName"`
		DefaultMode int    `json:"defaultMode"`
	} `json:"secret"`
	EmptyDir *struct {
		SizeLimit string `json:"sizeLimit"`
	} `json:"emptyDir"`
}

type daemonSet struct {
	object
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		UpdateStrategy struct {
			Type          string `json:"type"`
			RollingUpdate struct {
				MaxUnavailable int `json:"maxUnavailable"`
			} `json:"rollingUpdate"`
		} `json:"updateStrategy"`
		Template struct {
			Metadata meta `json:"metadata"`
			Spec     struct {
				ServiceAccountName            string            `json:"serviceAccountName"`
				AutomountServiceAccountToken  *bool             `json:"automountServiceAccountToken"`
				HostNetwork                   bool              `json:"hostNetwork"`
				DNSPolicy                     string            `json:"dnsPolicy"`
				NodeSelector                  map[string]string `json:"nodeSelector"`
				TerminationGracePeriodSeconds int               `json:"terminationGracePeriodSeconds"`
				Tolerations                   []struct {
					Key      string `json:"key"`
					Operator string `json:"operator"`
					Effect   string `json:"effect"`
				} `json:"tolerations"`
				SecurityContext struct {
					RunAsUser      *int  `json:"runAsUser"`
					RunAsGroup     *int  `json:"runAsGroup"`
					RunAsNonRoot   *bool `json:"runAsNonRoot"`
					SeccompProfile struct {
						Type string `json:"type"`
					} `json:"seccompProfile"`
				} `json:"securityContext"`
				Containers []container `json:"containers"`
				Volumes    []volume    `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// documents splits a YAML stream on document separators.
func documents(b []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// strict decodes one document, refusing fields the Go type does not know,
// so a misspelt field name fails here rather than being ignored.
func strict(t *testing.T, file string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

type manifests struct {
	files      map[string][]byte // every *.yaml, by name
	kust       kustomization
	namespaces map[string]object
	accounts   map[string]serviceAccount
	configMaps map[string]configMap
	secrets    map[string]secret
	ds         *daemonSet
}

func load(t *testing.T) *manifests {
	t.Helper()
	names, err := filepath.Glob("*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	m := &manifests{files: map[string][]byte{}, namespaces: map[string]object{}, accounts: map[string]serviceAccount{},
		configMaps: map[string]configMap{}, secrets: map[string]secret{}}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		m.files[name] = b
		docs := documents(b)
		if len(docs) == 0 {
			t.Fatalf("%s: no YAML document", name)
		}
		for _, doc := range docs {
			var o object
			if err := yaml.Unmarshal(doc, &o); err != nil {
				t.Fatalf("%s: not YAML: %v", name, err)
			}
			if o.Kind == "" || o.APIVersion == "" {
				t.Fatalf("%s: a document without kind or apiVersion", name)
			}
			if o.Kind != "Kustomization" && o.Metadata.Name == "" {
				t.Fatalf("%s: %s without metadata.name", name, o.Kind)
			}
			want := map[string]string{"Namespace": "v1", "ServiceAccount": "v1", "ConfigMap": "v1", "Secret": "v1",
				"DaemonSet": "apps/v1", "Kustomization": "kustomize.config.k8s.io/v1beta1"}[o.Kind]
			if want == "" {
				t.Fatalf("%s: unexpected kind %s", name, o.Kind)
			}
			if o.APIVersion != want {
				t.Fatalf("%s: %s has apiVersion %s, want %s", name, o.Kind, o.APIVersion, want)
			}
			if o.Kind != "Namespace" && o.Kind != "Kustomization" && o.Metadata.Namespace != "etcd-backup" {
				t.Errorf("%s: %s %s in namespace %q, want etcd-backup", name, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
			}
			switch o.Kind {
			case "Kustomization":
				strict(t, name, doc, &m.kust)
			case "Namespace":
				var ns struct {
					object
				}
				strict(t, name, doc, &ns)
				m.namespaces[o.Metadata.Name] = ns.object
			case "ServiceAccount":
				var sa serviceAccount
				strict(t, name, doc, &sa)
				m.accounts[o.Metadata.Name] = sa
			case "ConfigMap":
				var cm configMap
				strict(t, name, doc, &cm)
				m.configMaps[o.Metadata.Name] = cm
			case "Secret":
				var s secret
				strict(t, name, doc, &s)
				m.secrets[o.Metadata.Name] = s
			case "DaemonSet":
				if m.ds != nil {
					t.Fatalf("%s: a second DaemonSet", name)
				}
				m.ds = new(daemonSet)
				strict(t, name, doc, m.ds)
			}
		}
	}
	if m.ds == nil {
		t.Fatal("no DaemonSet")
	}
	return m
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestManifests(t *testing.T) {
	m := load(t)

	// kustomization: every manifest, nothing else, in one namespace.
	var others []string
	for name := range m.files {
		if name != "kustomization.yaml" {
			others = append(others, name)
		}
	}
	slices.Sort(others)
	res := slices.Clone(m.kust.Resources)
	slices.Sort(res)
	if !slices.Equal(res, others) || m.kust.Namespace != "etcd-backup" {
		t.Errorf("kustomization resources %v (namespace %q), want %v", m.kust.Resources, m.kust.Namespace, others)
	}
	if ns, ok := m.namespaces["etcd-backup"]; !ok || ns.Metadata.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace etcd-backup missing or not labelled for privileged pods: %+v", ns)
	}

	ds := m.ds
	spec := ds.Spec.Template.Spec
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	if len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Error("DaemonSet without a selector")
	}
	if len(m.kust.Images) != 1 || !strings.HasPrefix(spec.Containers[0].Image, m.kust.Images[0].Name+":") {
		t.Errorf("kustomization images %+v do not name the container image %s", m.kust.Images, spec.Containers[0].Image)
	}

	// Control-plane nodes only, on the node's network.
	if !spec.HostNetwork || spec.DNSPolicy != "ClusterFirstWithHostNet" {
		t.Errorf("hostNetwork %v, dnsPolicy %q", spec.HostNetwork, spec.DNSPolicy)
	}
	if v, ok := spec.NodeSelector["node-role.kubernetes.io/control-plane"]; !ok || v != "" {
		t.Errorf("nodeSelector %v", spec.NodeSelector)
	}
	tolerates := false
	for _, tol := range spec.Tolerations {
		if tol.Key == "node-role.kubernetes.io/control-plane" && tol.Operator == "Exists" && tol.Effect == "NoSchedule" {
			tolerates = true
		}
	}
	if !tolerates {
		t.Errorf("no toleration of the control-plane taint: %+v", spec.Tolerations)
	}

	// No Kubernetes API access.
	sa, ok := m.accounts[spec.ServiceAccountName]
	if !ok || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken ||
		spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("service account %q: missing, or its token is mounted", spec.ServiceAccountName)
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "agent" || !slices.Contains(c.Args, "--leader-only") {
		t.Errorf("args %v: want agent --leader-only ...", c.Args)
	}
	if ep, _ := flagValue(c.Args, "endpoints"); ep != "https://127.0.0.1:2379" {
		t.Errorf("--endpoints=%q, want the local member https://127.0.0.1:2379", ep)
	}
	for _, a := range c.Args[1:] {
		if !strings.HasPrefix(a, "--") {
			t.Errorf("argument %q: write flags as --name=value", a)
		}
	}

	// Volumes: each mounted, each mount backed, references resolved.
	vols := map[string]volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]string{} // mountPath -> volume
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			t.Errorf("volumeMount %s: no such volume", vm.Name)
		}
		if v.HostPath != nil && !vm.ReadOnly {
			t.Errorf("hostPath %s mounted read-write", v.HostPath.Path)
		}
		mounts[vm.MountPath] = vm.Name
	}
	for name, v := range vols {
		used := false
		for _, vm := range c.VolumeMounts {
			used = used || vm.Name == name
		}
		if !used {
			t.Errorf("volume %s is not mounted", name)
		}
		if v.Secret != nil {
			if _, ok := m.secrets[v.Secret.SecretName]; !ok {
				t.Errorf("volume %s: no Secret %s", name, v.Secret.SecretName)
			}
		}
		if v.HostPath != nil {
			if v.HostPath.Type != "File" {
				t.Errorf("hostPath %s: type %q, want File (a missing file must fail the pod, not be created)", v.HostPath.Path, v.HostPath.Type)
			}
			if dir := filepath.Dir(v.HostPath.Path); dir != "/etc/kubernetes/pki/etcd" && dir != "/etc/etcd-backup" ||
				strings.HasSuffix(v.HostPath.Path, "ca.key") {
				t.Errorf("hostPath %s: only the etcd CA certificate, the client certificate and key, and the drill key", v.HostPath.Path)
			}
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			if _, ok := m.configMaps[ef.ConfigMapRef.Name]; !ok {
				t.Errorf("envFrom: no ConfigMap %s", ef.ConfigMapRef.Name)
			}
		}
		if ef.SecretRef != nil {
			if _, ok := m.secrets[ef.SecretRef.Name]; !ok {
				t.Errorf("envFrom: no Secret %s", ef.SecretRef.Name)
			}
		}
	}
	// Every file the agent is told to read is in a mount.
	for _, f := range []string{"cacert", "cert", "key", "encrypt-to-file", "identity"} {
		p, ok := flagValue(c.Args, f)
		if !ok {
			if f == "identity" {
				continue
			}
			t.Errorf("no --%s", f)
			continue
		}
		if mounts[p] == "" && mounts[filepath.Dir(p)] == "" {
			t.Errorf("--%s=%s is not in any volumeMount", f, p)
		}
	}
	if v, _ := flagValue(c.Args, "cert"); !strings.Contains(v, "healthcheck-client") && !strings.Contains(v, "apiserver-etcd-client") {
		t.Errorf("--cert=%s: use kubeadm's healthcheck-client or apiserver-etcd-client certificate", v)
	}
	var tmp string
	for _, e := range c.Env {
		if e.Name == "TMPDIR" {
			tmp = e.Value
		}
	}
	if v := vols[mounts[tmp]]; tmp == "" || v.EmptyDir == nil || v.EmptyDir.SizeLimit == "" {
		t.Errorf("TMPDIR %q is not a size-limited emptyDir (drills write there; the root file system is read-only)", tmp)
	}

	// Storage credentials and recipients.
	st := m.secrets["etcd-backup-storage"]
	if st.StringData["AWS_ACCESS_KEY_ID"] == "" || st.StringData["AWS_SECRET_ACCESS_KEY"] == "" {
		t.Errorf("storage secret %+v lacks AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", st.StringData)
	}
	rcp := m.secrets["etcd-backup-recipients"].StringData["recipients.txt"]
	if !strings.HasPrefix(strings.TrimSpace(rcp), "age1") {
		t.Errorf("recipients.txt %q: want age1... public keys", rcp)
	}
	for name, b := range m.files {
		if bytes.Contains(b, []byte("AGE-SECRET-KEY-1")) || bytes.Contains(b, []byte("PRIVATE KEY-----")) {
			t.Errorf("%s holds a private key", name)
		}
	}
	if repo := m.configMaps["etcd-backup"].Data["ETCD_BACKUP_REPO"]; !strings.HasPrefix(repo, "s3://") {
		t.Errorf("ETCD_BACKUP_REPO %q: the example uses S3", repo)
	}

	// HTTP: loopback only, and the probes reach it from the node's network
	// namespace (kubelet's), which hostNetwork shares.
	listen, ok := flagValue(c.Args, "listen")
	host, port, err := net.SplitHostPort(listen)
	if !ok || err != nil || !net.ParseIP(host).IsLoopback() {
		t.Fatalf("--listen=%q: keep it on loopback (no authentication)", listen)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || strconv.Itoa(c.Ports[0].ContainerPort) != port {
		t.Errorf("ports %+v, want http %s", c.Ports, port)
	}
	for what, p := range map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no %s httpGet probe", what)
			continue
		}
		if p.HTTPGet.Host != host || strconv.Itoa(p.HTTPGet.Port) != port {
			t.Errorf("%s probe %s:%d, want %s:%s", what, p.HTTPGet.Host, p.HTTPGet.Port, host, port)
		}
		if p.PeriodSeconds == 0 || p.TimeoutSeconds == 0 || p.FailureThreshold == 0 {
			t.Errorf("%s probe without period, timeout or threshold: %+v", what, p)
		}
	}
	if c.LivenessProbe.HTTPGet.Path != "/" || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes: liveness %s, readiness %s", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}

	// Resources and security.
	quantity := regexp.MustCompile(`^[0-9]+(m|Mi|Gi)?$`)
	for k, v := range map[string]string{"requests.cpu": c.Resources.Requests["cpu"], "requests.memory": c.Resources.Requests["memory"], "limits.memory": c.Resources.Limits["memory"]} {
		if !quantity.MatchString(v) {
			t.Errorf("resources %s = %q", k, v)
		}
	}
	sc := c.SecurityContext
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext %+v: want no privilege escalation, read-only root, drop ALL", sc)
	}
	if spec.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("seccomp profile %q", spec.SecurityContext.SeccompProfile.Type)
	}
	if spec.TerminationGracePeriodSeconds < 35 {
		t.Errorf("terminationGracePeriodSeconds %d: less than the agent's 30 s --grace", spec.TerminationGracePeriodSeconds)
	}
}

// TestDockerfile checks the image recipe: multi-stage, static binary,
// distroless/static (or scratch) base, non-root default user.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var user string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "FROM" {
			froms = append(froms, line)
		}
		if len(f) == 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	if len(froms) < 2 || !strings.Contains(froms[0], "golang:") || !strings.Contains(froms[0], " AS build") {
		t.Errorf("want a golang builder stage, then the runtime stage: %q", froms)
	}
	last := froms[len(froms)-1]
	if !strings.Contains(last, "distroless/static") && !strings.HasSuffix(last, " scratch") {
		t.Errorf("runtime base %q: want distroless/static or scratch", last)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("USER %q: want a non-root default", user)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "COPY --from=build", "ENTRYPOINT [\"/usr/bin/etcd-backup\"]", "./cmd/etcd-backup"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil || !strings.Contains(string(ignore), ".cache") || !strings.Contains(string(ignore), ".git") {
		t.Errorf(".dockerignore must keep .git and .cache (test binaries) out of the build context: %v", err)
	}
}
