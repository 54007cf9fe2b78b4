package console

import "github.com/sagacoord/sagacoord/saga"

// Sizes of the graph's drawing, in SVG units.
const (
	nodeW, nodeH = 150, 34
	gapX, gapY   = 50, 14
)

// dag is a definition's steps laid out for SVG: a column per depth (the longest chain of
// dependencies before the step), edges from each dependency to its dependent.
type dag struct {
	Width, Height int
	Nodes         []dagNode
	Edges         []dagEdge
}

type dagNode struct {
	Name, Participant string
	Pivot             bool
	X, Y              int
}

type dagEdge struct {
	X1, Y1, X2, Y2 int
}

// layoutDAG places the steps of d. Normalized definitions are acyclic and list a step after
// its dependencies, so one pass in list order finds each depth.
func layoutDAG(d saga.Definition) dag {
	g := d.Graph()
	depth := make([]int, len(d.Steps))
	rows := map[int]int{}
	var out dag
	for i, s := range d.Steps {
		for _, dep := range g.Deps[i] {
			if dep < i {
				depth[i] = max(depth[i], depth[dep]+1)
			}
		}
		n := dagNode{Name: s.Name, Participant: s.Participant, Pivot: s.Pivot,
			X: depth[i] * (nodeW + gapX), Y: rows[depth[i]] * (nodeH + gapY)}
		rows[depth[i]]++
		out.Nodes = append(out.Nodes, n)
		out.Width = max(out.Width, n.X+nodeW)
		out.Height = max(out.Height, n.Y+nodeH)
	}
	for i := range d.Steps {
		for _, dep := range g.Deps[i] {
			a, b := out.Nodes[dep], out.Nodes[i]
			out.Edges = append(out.Edges, dagEdge{X1: a.X + nodeW, Y1: a.Y + nodeH/2, X2: b.X, Y2: b.Y + nodeH/2})
		}
	}
	return out
}
