package controllers

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/wsgate/wsgate/tablebuild"
)

// CompactPod is the Pod cache's transform: it replaces each Pod with a
// cachedPod, which holds only what the routing table needs (see
// tablebuild.CompactPod) and the resourceVersion, so that memory stays small
// at tens of thousands of pods. Records and tombstones
// (DeletedFinalStateUnknown) pass through unchanged, as client-go may
// transform an object twice.
//
// The cache then holds no *corev1.Pod: reading Pods through the manager's
// cache-backed client fails, and typed watches of Pods get records they
// cannot use. The TableBuilder reads the records through its event
// handlers.
func CompactPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &cachedPod{Pod: tablebuild.CompactPod(pod), resourceVersion: pod.ResourceVersion}, nil
}

var _ toolscache.TransformFunc = CompactPod

// cachedPod is a Pod as the cache holds it. It implements metav1.Object
// for client-go's informer, which keys objects by namespace and name and
// tells updates from resyncs by resourceVersion. It keeps no other
// metadata: the other getters return zero values. A record is shared by
// the informer's store and its event handlers and must not change, so the
// setters panic.
type cachedPod struct {
	tablebuild.Pod
	resourceVersion string
}

var _ metav1.Object = &cachedPod{}

func (p *cachedPod) GetNamespace() string                          { return p.Namespace() }
func (p *cachedPod) GetName() string                               { return p.Name() }
func (p *cachedPod) GetResourceVersion() string                    { return p.resourceVersion }
func (p *cachedPod) GetLabels() map[string]string                  { return p.Labels() }
func (p *cachedPod) GetGenerateName() string                       { return "" }
func (p *cachedPod) GetUID() types.UID                             { return "" }
func (p *cachedPod) GetGeneration() int64                          { return 0 }
func (p *cachedPod) GetSelfLink() string                           { return "" }
func (p *cachedPod) GetCreationTimestamp() metav1.Time             { return metav1.Time{} }
func (p *cachedPod) GetDeletionTimestamp() *metav1.Time            { return nil }
func (p *cachedPod) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (p *cachedPod) GetAnnotations() map[string]string             { return nil }
func (p *cachedPod) GetFinalizers() []string                       { return nil }
func (p *cachedPod) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (p *cachedPod) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }

func (p *cachedPod) SetNamespace(string)                          { readOnly() }
func (p *cachedPod) SetName(string)                               { readOnly() }
func (p *cachedPod) SetGenerateName(string)                       { readOnly() }
func (p *cachedPod) SetUID(types.UID)                             { readOnly() }
func (p *cachedPod) SetResourceVersion(string)                    { readOnly() }
func (p *cachedPod) SetGeneration(int64)                          { readOnly() }
func (p *cachedPod) SetSelfLink(string)                           { readOnly() }
func (p *cachedPod) SetCreationTimestamp(metav1.Time)             { readOnly() }
func (p *cachedPod) SetDeletionTimestamp(*metav1.Time)            { readOnly() }
func (p *cachedPod) SetDeletionGracePeriodSeconds(*int64)         { readOnly() }
func (p *cachedPod) SetLabels(map[string]string)                  { readOnly() }
func (p *cachedPod) SetAnnotations(map[string]string)             { readOnly() }
func (p *cachedPod) SetFinalizers([]string)                       { readOnly() }
func (p *cachedPod) SetOwnerReferences([]metav1.OwnerReference)   { readOnly() }
func (p *cachedPod) SetManagedFields([]metav1.ManagedFieldsEntry) { readOnly() }

func readOnly() { panic("controllers: a cached pod record is read-only") }

// podSet is the TableBuilder's view of the cached pods, kept up to date by
// the Pod informer's events. It holds the records the informer's store
// holds (not copies), keyed by namespace and name.
type podSet struct {
	mu   sync.Mutex
	pods map[types.NamespacedName]*tablebuild.Pod
}

// set stores obj and reports whether it differs, for a build, from the
// pod it replaces (a new pod always does).
func (s *podSet) set(obj any) bool {
	p := podRecord(obj)
	if p == nil {
		return false
	}
	k := types.NamespacedName{Namespace: p.Namespace(), Name: p.Name()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pods == nil {
		s.pods = make(map[types.NamespacedName]*tablebuild.Pod)
	}
	old := s.pods[k]
	s.pods[k] = p
	return old == nil || !old.Equal(p)
}

// remove forgets the pod obj names; obj may be a tombstone.
func (s *podSet) remove(obj any) {
	name, err := toolscache.DeletionHandlingObjectToName(obj)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pods, types.NamespacedName{Namespace: name.Namespace, Name: name.Name})
}

// list returns the pods; the records are immutable.
func (s *podSet) list() []*tablebuild.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*tablebuild.Pod, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, p)
	}
	return out
}

// podRecord returns the record of a cached object: a cachedPod, or a
// *corev1.Pod from a cache configured without CompactPod.
func podRecord(obj any) *tablebuild.Pod {
	switch o := obj.(type) {
	case *cachedPod:
		return &o.Pod
	case *corev1.Pod:
		p := tablebuild.CompactPod(o)
		return &p
	}
	return nil
}
