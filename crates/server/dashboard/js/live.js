// Live updates by polling: every ~2 s the open page asks the API what changed. Polling keeps
// the server stateless (no sockets to pin to one replica), so it works behind any load balancer.

export const POLL_MS = 2000;
const MAX_BACKOFF_MS = 15_000;

export class Live {
  #timer = null;
  #tick = null;
  #delay = POLL_MS;
  #generation = 0;

  /** `indicator`: the element that shows whether updates flow. */
  constructor(indicator) {
    this.indicator = indicator;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.#tick) this.#schedule(0);
    });
  }

  /** Polls `tick()` (an async function) until `stop()` or the next `start()`. */
  start(tick) {
    this.stop();
    this.#tick = tick;
    this.#delay = POLL_MS;
    this.#show("live", "Live");
    this.#schedule(POLL_MS);
  }

  stop() {
    this.#generation += 1;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#tick = null;
    this.#show("idle", "");
  }

  #schedule(ms) {
    clearTimeout(this.#timer);
    const generation = this.#generation;
    this.#timer = setTimeout(() => this.#run(generation), ms);
  }

  async #run(generation) {
    if (generation !== this.#generation || !this.#tick) return;
    if (document.visibilityState === "hidden") return; // resumes on visibilitychange
    try {
      await this.#tick();
      if (generation !== this.#generation) return;
      this.#delay = POLL_MS;
      this.#show("live", "Live");
    } catch (e) {
      if (generation !== this.#generation) return;
      this.#delay = Math.min(MAX_BACKOFF_MS, this.#delay * 2);
      this.#show("error", `Reconnecting (${e.message})`);
    }
    this.#schedule(this.#delay);
  }

  #show(state, text) {
    if (!this.indicator) return;
    this.indicator.dataset.state = state;
    this.indicator.textContent = text;
    this.indicator.title = state === "live" ? "New spend and calls appear without reloading (every 2 seconds)" : text;
  }
}
