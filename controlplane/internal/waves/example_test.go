package waves_test

import (
	"fmt"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/waves"
)

func ExampleCompute() {
	var candidates []waves.Candidate
	for i := range 100 {
		candidates = append(candidates, waves.Candidate{
			ID:        fmt.Sprintf("cluster-%03d", i),
			Sensitive: i%20 == 0, // 5 of them
		})
	}
	plan, err := waves.Compute(candidates, waves.SCurve{}, waves.Policy{
		BaseSoak:            time.Hour,
		Concurrency:         10,
		FailureBudget:       waves.Budget{Percent: 10},
		GlobalFailureBudget: &waves.Budget{Count: 3},
		ReserveSensitive:    true,
	}, "rollout-7f3a")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d clusters, global budget %d\n", plan.Clusters(), plan.GlobalFailureBudget)
	for _, w := range plan.Waves {
		fmt.Println(w)
	}
	// Output:
	// 100 clusters, global budget 3
	// wave 1: 3 clusters, soak 2h, budget 0
	// wave 2: 3 clusters, soak 2h, budget 0
	// wave 3: 6 clusters, soak 1h, budget 0
	// wave 4: 9 clusters, soak 1h, budget 0
	// wave 5: 15 clusters, soak 1h, 10 at a time, budget 1
	// wave 6: 25 clusters, soak 30m, 10 at a time, budget 2
	// wave 7: 16 clusters, soak 15m, 10 at a time, budget 1
	// wave 8: 9 clusters, soak 15m, budget 0
	// wave 9: 6 clusters, soak 15m, budget 0
	// wave 10: 3 clusters, soak 1h, budget 0
	// wave 11 (sensitive): 5 clusters, budget 0
}
