package etcdfill

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Fill parameters: a few concurrent writers, each sending Txns of many puts
// (below etcd's default --max-txn-ops 128 and --max-request-bytes 1.5 MiB).
const (
	Writers      = 4       // concurrent writers
	TxnMaxOps    = 100     // puts per Txn, at most
	TxnMaxBytes  = 1 << 20 // key+value bytes per Txn, at most
	minValueSize = 1 << 10
	maxValueSize = 8 << 10
)

// Profiles are the value profiles a Filler knows.
var Profiles = []string{"random", "k8s"}

// generator makes keys and values of one profile.
type generator interface {
	next(seq uint64) (key string, value []byte)
}

func newGenerator(profile string, seed uint64) generator {
	r := rand.New(rand.NewChaCha8(seedBytes(seed)))
	switch profile {
	case "random":
		return &randomGen{r: r}
	case "k8s":
		return &k8sGen{r: r}
	}
	panic("unknown profile " + profile)
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	for i := range 4 {
		v := seed*0x9e3779b97f4a7c15 + uint64(i)*0xbf58476d1ce4e5b9
		for j := range 8 {
			b[i*8+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// randomGen: incompressible values of 1-8 KiB.
type randomGen struct{ r *rand.Rand }

func (g *randomGen) next(seq uint64) (string, []byte) {
	v := make([]byte, minValueSize+g.r.IntN(maxValueSize-minValueSize+1))
	for i := 0; i < len(v); i += 8 {
		x := g.r.Uint64()
		for j := 0; j < 8 && i+j < len(v); j++ {
			v[i+j] = byte(x >> (8 * j))
		}
	}
	return fmt.Sprintf("/bench/random/%016x", seq), v
}

// k8sGen: Kubernetes-like objects under /registry/<resource>/<ns>/<name>,
// 1-8 KiB, JSON with the repetitive field names, labels, managed fields and
// last-applied annotations of real objects, behind the "k8s\x00" magic that
// kube-apiserver puts in front of its protobuf encoding. Secrets and config
// maps carry base64 data, which compresses little.
type k8sGen struct{ r *rand.Rand }

var (
	k8sNamespaces = []string{"default", "kube-system", "monitoring", "ingress-nginx", "cert-manager", "logging",
		"payments", "checkout", "search", "catalog", "identity", "team-a", "team-b", "team-c", "batch", "ml-serving",
		"staging", "prod-eu", "prod-us", "argocd"}
	k8sApps = []string{"api", "web", "worker", "redis", "postgres", "kafka", "frontend", "backend", "scheduler",
		"cache", "gateway", "auth", "indexer", "notifier", "exporter", "controller"}
	k8sResources = []struct {
		name   string
		weight int
	}{{"pods", 40}, {"events", 15}, {"configmaps", 12}, {"replicasets", 10}, {"secrets", 8},
		{"deployments", 5}, {"services", 5}, {"endpointslices", 5}}
)

var k8sKinds = map[string]string{"pods": "Pod", "events": "Event", "configmaps": "ConfigMap", "replicasets": "ReplicaSet",
	"secrets": "Secret", "deployments": "Deployment", "services": "Service", "endpointslices": "EndpointSlice"}

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

func (g *k8sGen) word(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[g.r.IntN(len(alnum))]
	}
	return string(b)
}

func (g *k8sGen) uid() string {
	const hex = "0123456789abcdef"
	b := []byte("xxxxxxxx-xxxx-4xxx-axxx-xxxxxxxxxxxx")
	for i, c := range b {
		if c == 'x' {
			b[i] = hex[g.r.IntN(16)]
		}
	}
	return string(b)
}

func (g *k8sGen) timestamp() string {
	t := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(g.r.IntN(300*24*3600)) * time.Second)
	return t.Format(time.RFC3339)
}

func (g *k8sGen) next(seq uint64) (string, []byte) {
	n := g.r.IntN(100)
	res := k8sResources[0].name
	for _, r := range k8sResources {
		if n < r.weight {
			res = r.name
			break
		}
		n -= r.weight
	}
	ns := k8sNamespaces[g.r.IntN(len(k8sNamespaces))]
	app := k8sApps[g.r.IntN(len(k8sApps))]
	hash := g.word(10)
	name := app + "-" + hash + "-" + g.word(5) + strconv.FormatUint(seq, 36)
	target := minValueSize + g.r.IntN(maxValueSize-minValueSize+1)
	kind := k8sKinds[res]
	apiVersion := "v1"
	switch res {
	case "replicasets", "deployments":
		apiVersion = "apps/v1"
	case "endpointslices":
		apiVersion = "discovery.k8s.io/v1"
	}

	b := make([]byte, 0, target+1024)
	b = append(b, "k8s\x00\n\x0f\n"...)
	b = append(b, `{"apiVersion":"`+apiVersion+`","kind":"`+kind+`","metadata":{"name":"`+name+`","namespace":"`+ns+
		`","uid":"`+g.uid()+`","resourceVersion":"`+strconv.Itoa(1000000+g.r.IntN(90000000))+
		`","creationTimestamp":"`+g.timestamp()+`","labels":{"app":"`+app+`","app.kubernetes.io/name":"`+app+
		`","app.kubernetes.io/part-of":"`+ns+`","pod-template-hash":"`+hash+`"}`...)
	if res == "pods" || res == "replicasets" {
		b = append(b, `,"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"`+app+"-"+hash+
			`","uid":"`+g.uid()+`","controller":true,"blockOwnerDeletion":true}]`...)
	}
	b = append(b, `,"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"`+apiVersion+
		`","time":"`+g.timestamp()+`","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:app":{},"f:pod-template-hash":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"`+g.uid()+
		`\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"`+app+`\"}":{".":{},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{".":{},"f:limits":{".":{},"f:cpu":{},"f:memory":{}},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{}}}},`+
		`{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"`+g.timestamp()+`","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:conditions":{"k:{\"type\":\"ContainersReady\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:phase":{},"f:podIP":{},"f:startTime":{}}},"subresource":"status"}]},`...)
	switch res {
	case "secrets", "configmaps":
		b = append(b, `"type":"Opaque","data":{`...)
		for i := 0; len(b) < target-64; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			raw := make([]byte, 48+g.r.IntN(400))
			if res == "configmaps" {
				// Config text: mostly repeated settings, some unique values.
				const conf = "key = value\nenabled = true\ntimeout = 30s\n"
				for j := range raw {
					raw[j] = conf[j%len(conf)]
				}
				copy(raw, g.word(min(len(raw), 16)))
			} else {
				for j := range raw {
					raw[j] = byte(g.r.Uint32())
				}
			}
			b = append(b, `"`+app+`-`+strconv.Itoa(i)+`.conf":"`...)
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		}
		b = append(b, "}}"...)
	case "events":
		b = append(b, `"involvedObject":{"kind":"Pod","namespace":"`+ns+`","name":"`+name+`","uid":"`+g.uid()+
			`","apiVersion":"v1","resourceVersion":"`+strconv.Itoa(g.r.IntN(90000000))+`","fieldPath":"spec.containers{`+app+
			`}"},"reason":"Pulled","message":"Successfully pulled image \"registry.example.com/`+ns+"/"+app+":v1."+
			strconv.Itoa(g.r.IntN(40))+`\" in 1.`+strconv.Itoa(g.r.IntN(999))+`s","source":{"component":"kubelet","host":"node-`+
			g.word(5)+`"},"firstTimestamp":"`+g.timestamp()+`","lastTimestamp":"`+g.timestamp()+`","count":1,"type":"Normal","eventTime":null,"reportingComponent":"kubelet","reportingInstance":"node-`+g.word(5)+`","note":"`...)
		for len(b) < target-8 {
			b = append(b, "Back-off restarting failed container "+app+" in pod "+name+" "...)
		}
		b = append(b, `"}`...)
	default:
		b = append(b, `"spec":{"replicas":3,"selector":{"matchLabels":{"app":"`+app+`"}},"template":{"metadata":{"labels":{"app":"`+app+
			`"}},"spec":{"volumes":[{"name":"kube-api-access-`+g.word(5)+`","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}}],"defaultMode":420}}],"containers":[{"name":"`+
			app+`","image":"registry.example.com/`+ns+"/"+app+":v1."+strconv.Itoa(g.r.IntN(40))+
			`","ports":[{"containerPort":8080,"protocol":"TCP"}],"env":[`...)
		for i := 0; len(b) < target-700; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"name":"`+app+`_SETTING_`+strconv.Itoa(i)+`","value":"`+g.word(8+g.r.IntN(32))+`"}`...)
		}
		b = append(b, `],"resources":{"limits":{"cpu":"500m","memory":"512Mi"},"requests":{"cpu":"100m","memory":"128Mi"}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","nodeName":"node-`+
			g.word(5)+`","securityContext":{},"schedulerName":"default-scheduler"}}},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastProbeTime":null,"lastTransitionTime":"`+
			g.timestamp()+`"}],"hostIP":"10.0.`+strconv.Itoa(g.r.IntN(256))+"."+strconv.Itoa(g.r.IntN(256))+`","podIP":"10.244.`+
			strconv.Itoa(g.r.IntN(256))+"."+strconv.Itoa(g.r.IntN(256))+`","startTime":"`+g.timestamp()+`"}}`...)
	}
	return "/registry/" + res + "/" + ns + "/" + name, b
}

// Stats describes one fill step.
type Stats struct {
	Keys     int64
	Bytes    int64 // key+value bytes written
	Duration time.Duration
	DBSize   int64 // backend size when the fill stopped
}

// Filler writes one profile's data into a cluster, in steps of growing
// target size; keys never repeat across steps. The data is the same for the
// same profile and steps (seeded per step and writer), the interleaving of
// the writers aside.
type Filler struct {
	profile string
	seq     atomic.Uint64
	round   uint64

	// Writers, TxnMaxOps and TxnMaxBytes override the package defaults
	// when set (larger Txns need etcd's --max-txn-ops and
	// --max-request-bytes raised to match).
	Writers, TxnMaxOps, TxnMaxBytes int
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// New returns a Filler of profile (one of Profiles).
func New(profile string) (*Filler, error) {
	if !slices.Contains(Profiles, profile) {
		return nil, fmt.Errorf("unknown profile %q (want %s)", profile, strings.Join(Profiles, ", "))
	}
	return &Filler{profile: profile}, nil
}

// FillTo writes through endpoint (an etcd client URL) until dbSize, asked
// every 100 ms, reports at least target bytes, or ctx ends.
func (f *Filler) FillTo(ctx context.Context, endpoint string, target int64, dbSize func(context.Context) (int64, error)) (Stats, error) {
	f.round++
	start := time.Now()
	if size, err := dbSize(ctx); err != nil {
		return Stats{}, err
	} else if size >= target {
		return Stats{DBSize: size}, nil
	}
	writers, maxOps, maxBytes := orDefault(f.Writers, Writers), orDefault(f.TxnMaxOps, TxnMaxOps), orDefault(f.TxnMaxBytes, TxnMaxBytes)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallSendMsgSize: max(2<<20, maxBytes+maxOps*256+(64<<10))})
	if err != nil {
		return Stats{}, err
	}
	defer cli.Close()

	var (
		stop       atomic.Bool
		keys, byts atomic.Int64
		wg         sync.WaitGroup
		errOnce    sync.Once
		firstErr   error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		stop.Store(true)
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gen := newGenerator(f.profile, f.round*1000+uint64(w))
			for !stop.Load() {
				var ops []clientv3.Op
				size := 0
				for len(ops) < maxOps {
					k, v := gen.next(f.seq.Add(1))
					if size+len(k)+len(v) > maxBytes {
						break
					}
					size += len(k) + len(v)
					ops = append(ops, clientv3.OpPut(k, string(v)))
				}
				tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := cli.Txn(tctx).Then(ops...).Commit()
				tcancel()
				if err != nil {
					fail(fmt.Errorf("fill txn: %w", err))
					return
				}
				keys.Add(int64(len(ops)))
				byts.Add(int64(size))
			}
		}()
	}
	var size int64
	for !stop.Load() {
		select {
		case <-ctx.Done():
			fail(fmt.Errorf("fill to %d bytes: %w", target, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
		if s, err := dbSize(ctx); err == nil {
			size = s
			if size >= target {
				stop.Store(true)
			}
		}
	}
	wg.Wait()
	if firstErr != nil {
		return Stats{}, firstErr
	}
	if s, err := dbSize(ctx); err == nil {
		size = s
	}
	return Stats{Keys: keys.Load(), Bytes: byts.Load(), Duration: time.Since(start), DBSize: size}, nil
}
