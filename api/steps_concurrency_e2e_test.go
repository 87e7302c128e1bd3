package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestParallelFirstStepsReadsAllAnswer sends the first steps reads of a new
// car association in parallel: one request mints the steps, the others find
// them minted; every one must answer them (a request that finds the steps
// minted by another one must wait, as the minting one does, until the read
// model has them).
func TestParallelFirstStepsReadsAllAnswer(t *testing.T) {
	l := newLedger(t, nil)
	l.signIn("steps@example.com", "phone-1")
	d := l.device("steps@example.com", "phone-1")
	for round := range 5 {
		vin := fmt.Sprintf("WVWZZZ1JZXW00000%d", round)
		d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
		car := d.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"vehicleStatus"}`, 201, "").body["carAssociationID"].(string)
		body := js(map[string]any{"api": stepsAPI, "parameters": map[string]any{"carAssociationID": car}})
		var wg sync.WaitGroup
		answers := make([]string, 12)
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("POST", l.url+"/pims/get", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+d.token)
				req.Header.Set("X-Device-Id", d.id)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					answers[i] = err.Error()
					return
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				var env struct {
					Status string `json:"status"`
					Result struct {
						StepsID int64 `json:"stepsID"`
					} `json:"result"`
				}
				_ = json.Unmarshal(raw, &env)
				if env.Status == "SUCCEEDED" {
					answers[i] = fmt.Sprint(env.Result.StepsID)
				} else {
					answers[i] = fmt.Sprintf("HTTP %d %s", resp.StatusCode, raw)
				}
			}()
		}
		wg.Wait()
		for _, a := range answers {
			if a != answers[0] || strings.HasPrefix(a, "HTTP") {
				t.Fatalf("round %d: parallel first reads answered %q", round, answers)
			}
		}
	}
}
