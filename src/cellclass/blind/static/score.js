// Blinded scoring page: shows one image at a time and sends the scorer's answers.
// The server sends only tokens, counts and class names; nothing here knows a file name.
// Who scores is the session key in an HttpOnly cookie, set by /api/start (a new name) or
// /api/resume (a personal link, /#key=...); this script never stores the key itself.
// How images are shown (zoom, smoothing, contrast stretch) is one setting for every image,
// kept in sessionStorage while the tab is open; it holds nothing about the images.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const fixed = document.body.dataset.scorer || ""; // server started with --scorer
  const buttons = Array.from(document.querySelectorAll(".answer"));
  let state = null; // the last progress the server sent
  let busy = false; // a request is in flight: further keys are ignored
  let shownAt = null; // performance.now() when the current image appeared
  const VIEW_KEY = "cellclass-view";
  const ZOOMS = ["fit", "1", "2", "4"];
  const view = loadView(); // { zoom, smoothing, stretch }

  function loadView() {
    const chosen = { zoom: "fit", smoothing: "nearest", stretch: false };
    try {
      const saved = JSON.parse(sessionStorage.getItem(VIEW_KEY) || "{}");
      if (ZOOMS.includes(saved.zoom)) chosen.zoom = saved.zoom;
      if (saved.smoothing === "smooth") chosen.smoothing = "smooth";
      chosen.stretch = saved.stretch === true;
    } catch (ignored) { /* storage unavailable or garbled: the defaults */ }
    return chosen;
  }

  // The image's URL under the current contrast setting.
  const imageUrl = (path) => (view.stretch ? `${path}?contrast=stretch` : path);

  // Size the image: a whole zoom factor of its pixels, or for "fit" the largest whole
  // factor that fits the window (shrunk to fit when even 1x does not).
  function sizeImage() {
    const image = $("image");
    if (!image.naturalWidth) return;
    let factor = Number(view.zoom);
    if (view.zoom === "fit") {
      const rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
      const width = window.innerWidth * 0.92 - 1.5 * rem;
      const height = window.innerHeight - 16 * rem;
      const fit = Math.max(Math.min(width / image.naturalWidth, height / image.naturalHeight), 0.1);
      factor = fit >= 1 ? Math.floor(fit) : fit;
    }
    image.style.width = `${Math.round(image.naturalWidth * factor)}px`;
    image.style.height = `${Math.round(image.naturalHeight * factor)}px`;
  }

  function applyView() {
    $("zoom").value = view.zoom;
    $("smoothing").value = view.smoothing;
    $("stretch").checked = view.stretch;
    $("image").classList.toggle("smooth", view.smoothing === "smooth");
    sizeImage();
    if (state && !state.done && $("image").getAttribute("src") !== imageUrl(state.image)) {
      $("image").src = imageUrl(state.image); // same image, other contrast: the clock runs on
    }
  }

  function changeView(event) {
    view.zoom = $("zoom").value;
    view.smoothing = $("smoothing").value;
    view.stretch = $("stretch").checked;
    try { sessionStorage.setItem(VIEW_KEY, JSON.stringify(view)); } catch (ignored) { /* kept in memory */ }
    applyView();
    event.target.blur(); // number keys answer again instead of changing the control
  }

  const setMessage = (text) => { $("message").textContent = text || ""; };
  const setEnabled = (on) => buttons.forEach((button) => { button.disabled = !on; });

  async function call(method, url, body) {
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: body ? { "Content-Type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (error) {
      throw new Error("Cannot reach the scoring server. Your answers so far are saved; "
        + "reload this page when the server runs again.");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.error || `server error ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function showProgress(progress) {
    const { answered, total, done } = progress;
    $("bar").style.width = `${((100 * answered) / total).toFixed(1)}%`;
    $("progress").setAttribute("aria-valuenow", answered);
    $("progress").setAttribute("aria-valuemax", total);
    $("progress").hidden = false;
    $("count").hidden = false;
    $("count").textContent = `${answered} / ${total}`;
    $("who").textContent = progress.scorer;
    $("scoring").hidden = done;
    $("finish").hidden = !done;
    $("undo").disabled = answered === 0;
    $("finish-text").textContent = `You answered all ${total} images.`;
  }

  function showLogin() {
    state = null;
    $("scoring").hidden = true;
    $("finish").hidden = true;
    $("login").hidden = Boolean(fixed); // one-scorer server: only the printed link works
    if (!fixed) $("name").focus();
  }

  function showLink(key) {
    $("link").textContent = `${window.location.origin}/#key=${key}`;
    $("personal").hidden = false;
  }

  function show(progress) {
    state = progress;
    $("login").hidden = true;
    showProgress(progress);
    setEnabled(false);
    shownAt = null;
    if (progress.done) return;
    const image = $("image");
    const ready = () => {
      sizeImage();
      if (state !== progress || shownAt !== null) return;
      shownAt = performance.now();
      setEnabled(true);
    };
    image.onload = ready;
    image.onerror = () => setMessage("The image could not be loaded; reload the page.");
    if (image.getAttribute("src") === imageUrl(progress.image) && image.complete) ready();
    else image.src = imageUrl(progress.image);
  }

  async function run(action) {
    if (busy) return;
    busy = true;
    setMessage("");
    try {
      show(await action());
    } catch (error) {
      setMessage(error.message);
      if (error.status === 403) showLogin();
      if (error.status === 409 || error.status === 404) {
        try { show(await call("GET", "/api/next")); } catch (ignored) { /* message already shown */ }
      }
    } finally {
      busy = false;
    }
  }

  function answer(index) {
    if (!state || state.done || shownAt === null || index >= buttons.length) return;
    const button = buttons[index];
    button.classList.add("pressed");
    setTimeout(() => button.classList.remove("pressed"), 150);
    const body = {
      token: state.token,
      answer: button.dataset.answer,
      response_ms: Math.round(performance.now() - shownAt),
    };
    run(() => call("POST", "/api/answer", body));
  }

  function undo() {
    if (!state || state.answered === 0) return;
    run(() => call("POST", "/api/undo", {}));
  }

  document.addEventListener("keydown", (event) => {
    if (!state || event.repeat || ["INPUT", "SELECT"].includes(event.target.tagName)) return;
    if (event.key >= "1" && event.key <= "9" && !event.ctrlKey && !event.metaKey) {
      answer(Number(event.key) - 1);
    } else if (event.key === "Backspace" || (event.key === "z" && (event.ctrlKey || event.metaKey))) {
      event.preventDefault();
      undo();
    }
  });
  buttons.forEach((button, index) => button.addEventListener("click", () => answer(index)));
  ["zoom", "smoothing", "stretch"].forEach((id) => $(id).addEventListener("change", changeView));
  window.addEventListener("resize", () => { if (view.zoom === "fit") sizeImage(); });
  applyView();
  $("undo").addEventListener("click", undo);
  $("undo-finish").addEventListener("click", undo);
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("name").value.trim();
    if (!name) return;
    run(async () => {
      const progress = await call("POST", "/api/start", { scorer: name });
      showLink(progress.key);
      return progress;
    });
  });

  // A personal link, /#key=...: resume that session (also when pasted into an open page).
  function openLink() {
    const key = new URLSearchParams(window.location.hash.slice(1)).get("key");
    if (!key) return false;
    window.history.replaceState(null, "", window.location.pathname); // the key leaves the URL bar
    run(() => call("POST", "/api/resume", { key }));
    return true;
  }
  window.addEventListener("hashchange", openLink);

  if (!openLink()) {
    run(() => call("GET", "/api/next")).then(() => {
      if (!state && !fixed) setMessage(""); // a new scorer: the form says what to do
    });
  }
})();
