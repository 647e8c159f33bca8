// digitnet's draw-a-digit page: draw (mouse, touch, pen or keyboard) or drop a photo; the
// server answers with the ten probabilities and the 28x28 image the model saw.
"use strict";

const INK = 18;          // stroke width on the 280x280 canvas (MNIST-like after scaling)
const DEBOUNCE_MS = 120; // predict this long after the drawing last changed
const KEY_STEP = 10;     // keyboard pen step in canvas pixels (Shift: 2)

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const seen = document.getElementById("seen");
const bars = document.getElementById("bars");
const answer = document.getElementById("answer");
const confidence = document.getElementById("confidence");
const sumText = document.getElementById("sum");
const statusText = document.getElementById("status");

let drawn = false;      // anything on the canvas since the last Clear
let last = null;        // the last point of the stroke being drawn
let timer = null;       // the debounce timer, while one is set
let inFlight = 0;       // requests out (a photo's from when it is read): a drawing waits...
let again = false;      // ...and is sent again after them when it changed meanwhile
let pen = {x: 140, y: 140, down: false};  // the keyboard's pen
let answered = 0;       // answers shown so far (tests wait on data-answers)
let generation = 0;     // bumped by Clear: an answer for a cleared drawing is not shown

function clearCanvas() {
  generation += 1;
  cancelTimer();
  again = false;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  drawn = false;
  showEmpty();
  showBusy();
}

function setupBars() {
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.dataset.digit = digit;
    item.innerHTML = `<span class="label">${digit}</span><span class="track"><span class="fill"></span></span><span class="value">–</span>`;
    bars.appendChild(item);
  }
}

function showEmpty() {
  answer.textContent = "–";
  confidence.textContent = "Draw a digit to start.";
  sumText.textContent = "–";
  for (const item of bars.children) {
    item.querySelector(".fill").style.width = "0";
    item.querySelector(".value").textContent = "–";
    item.classList.remove("best");
    delete item.dataset.probability;
  }
  seen.getContext("2d").clearRect(0, 0, 28, 28);
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return {x: (event.clientX - box.left) * canvas.width / box.width,
          y: (event.clientY - box.top) * canvas.height / box.height};
}

function stroke(from, to) {
  ctx.beginPath();
  if (from.x === to.x && from.y === to.y) {
    // the canvas prunes a zero-length line before stroking it: a tap is drawn as a disc
    ctx.fillStyle = "#000";
    ctx.arc(from.x, from.y, INK / 2, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = INK;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }
  drawn = true;
}

function changed() {
  clearTimeout(timer);
  timer = setTimeout(predictDrawing, DEBOUNCE_MS);
  showBusy();
}

function cancelTimer() {
  clearTimeout(timer);
  timer = null;
}

// body[data-state] is "busy" while an answer is due (tests and screen readers wait on it):
// the drawing changed and waits to be sent, or a request is out or due again. An answer that
// comes while the drawing is still changing leaves it busy.
function showBusy() {
  const due = timer !== null || inFlight > 0 || again;
  document.body.dataset.state = due ? "busy" : "idle";
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  last = point(event);
  stroke(last, last);  // a tap leaves a dot
  changed();
});

canvas.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const points = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of points.length ? points : [event]) {
    const next = point(each);
    stroke(last, next);
    last = next;
  }
  changed();
});

function endStroke() {
  if (last === null) return;
  last = null;
  predictDrawing();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

canvas.addEventListener("keydown", (event) => {
  const step = event.shiftKey ? 2 : KEY_STEP;
  const moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
  if (event.key in moves) {
    const [dx, dy] = moves[event.key];
    const next = {x: Math.min(Math.max(pen.x + dx, 0), canvas.width),
                  y: Math.min(Math.max(pen.y + dy, 0), canvas.height)};
    if (pen.down) { stroke(pen, next); changed(); }
    pen = {...next, down: pen.down};
  } else if (event.key === " ") {
    pen.down = !pen.down;
    if (pen.down) { stroke(pen, pen); changed(); }
  } else if (["Delete", "Backspace", "Escape"].includes(event.key)) {
    clearCanvas();
  } else if (event.key === "Enter") {
    predictDrawing();
  } else {
    return;
  }
  event.preventDefault();
  showPen();
});
canvas.addEventListener("focus", showPen);
canvas.addEventListener("blur", () => { document.getElementById("drop").style.removeProperty("--pen-x"); });

function showPen() {
  const drop = document.getElementById("drop");
  drop.style.setProperty("--pen-x", `${pen.x / canvas.width * 100}%`);
  drop.style.setProperty("--pen-y", `${pen.y / canvas.height * 100}%`);
  drop.classList.toggle("pen-down", pen.down);
}

function predictDrawing() {
  cancelTimer();
  if (!drawn) { showBusy(); return; }
  if (inFlight > 0) { again = true; return; }
  inFlight += 1;
  showBusy();  // the PNG is made asynchronously, before send
  canvas.toBlob((blob) => send(blob, "image/png"), "image/png");
}

// Send a drawing's PNG or a photo; the caller counted it in inFlight.
async function send(body, type) {
  statusText.textContent = "Asking the model…";
  const asked = generation;
  try {
    const bytes = await body.arrayBuffer();  // sent as bytes: devtools and tests see them
    const response = await fetch("/predict?input=true", {method: "POST", body: bytes,
                                                          headers: {"content-type": type || "application/octet-stream"}});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    if (asked === generation) show(data);
    statusText.textContent = "";
  } catch (error) {
    statusText.textContent = `Error: ${error.message}`;
  } finally {
    inFlight -= 1;
    if (again) { again = false; predictDrawing(); }
    showBusy();
  }
}

function show(data) {
  const best = data.probabilities.indexOf(Math.max(...data.probabilities));
  answer.textContent = data.digit === "unknown" ? "unknown" : String(data.digit);
  answer.dataset.digit = String(data.digit);
  confidence.textContent = data.digit === "unknown"
    ? `Not sure: the best guess, ${best}, has probability ${data.probability.toFixed(3)}.`
    : `with probability ${data.probability.toFixed(3)}`;
  let sum = 0;
  data.probabilities.forEach((p, digit) => {
    sum += p;
    const item = bars.children[digit];
    item.dataset.probability = String(p);
    item.querySelector(".fill").style.width = `${(p * 100).toFixed(2)}%`;
    item.querySelector(".value").textContent = p.toFixed(3);
    item.classList.toggle("best", digit === best);
    item.setAttribute("aria-label", `${digit}: ${p.toFixed(3)}`);
  });
  sumText.textContent = sum.toFixed(3);
  sumText.dataset.sum = String(sum);
  drawSeen(data.input);
  answered += 1;
  document.body.dataset.answers = String(answered);
}

function drawSeen(rows) {
  const image = new ImageData(28, 28);
  rows.flat().forEach((v, i) => { image.data.set([v, v, v, 255], i * 4); });
  seen.getContext("2d").putImageData(image, 0, 0);
}

async function sendFile(file) {
  if (!file) return;
  clearCanvas();
  inFlight += 1;  // busy until the answer is in
  showBusy();
  const asked = generation;
  try {  // show the photo where the drawing was; the model gets the file itself
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  } catch (error) { /* the server says what is wrong with it */ }
  drawn = false;  // drawing on top starts a new drawing
  if (asked === generation) {
    await send(file, file.type);
  } else {
    inFlight -= 1;
    showBusy();
  }
}

document.getElementById("clear").addEventListener("click", clearCanvas);
document.getElementById("file").addEventListener("change", (event) => sendFile(event.target.files[0]));
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  sendFile(event.dataTransfer.files[0]);
});

async function showModel() {
  try {
    const info = await (await fetch("/model")).json();
    const accuracy = info.test_accuracy == null ? "" : `, test accuracy ${(info.test_accuracy * 100).toFixed(1)}%`;
    document.getElementById("model-line").textContent =
      `Model: ${info.run || info.model} (${info.config || "?"}${accuracy}; ${info.backend}).`;
  } catch (error) {
    document.getElementById("model-line").textContent = "The server does not answer.";
  }
}

setupBars();
clearCanvas();
showModel();
