// The report's player (inlined into data/report.html by pipeline/report.py): plays a sample from its notes with
// the browser's own Web Audio, no file, script or network needed, while a cursor runs over its piano roll.
// Each sample card holds its notes as JSON (<script type="application/json" class="notes">, written by generate:
// seconds, MIDI pitch, velocity, drum class, part) and the picture's plot area as fractions of the PNG, so the
// cursor's x is exact: left + (t / total) * (right - left). The seed sounds soft (sine) and the continuation
// bright (triangle); the cursor is blue over the seed, red over the continuation. Drum classes are synthesised
// (a falling sine for kick and toms, filtered noise for snare, hi-hats and cymbals).
// The status line's data-state ("starting", then the AudioContext's state, "ended" or "stopped"),
// data-scheduled (notes handed to Web Audio), data-part and data-position (seconds) say what is playing, for a
// person and for the headless-browser test. `report.html#play=sample_003` starts that sample on load.
(() => {
  'use strict';
  let ctx = null;      // one AudioContext for the page, made at the first click: browsers start audio on a gesture
  let playing = null;  // {card, bus, frame}: the sample playing now
  let noise = null;
  const LEAD = 0.1;    // seconds between scheduling and the first note, so none starts late
  const DRUMS = {      // [filter type, frequency Hz, Q, length s] for noise; [from Hz, to Hz, length s] for a sine
    snare: ['bandpass', 1800, 0.8, 0.18], closed_hihat: ['highpass', 7000, 0.7, 0.05],
    open_hihat: ['highpass', 7000, 0.7, 0.35], crash: ['highpass', 4000, 0.7, 1.2], ride: ['bandpass', 6000, 2, 0.6],
    kick: [150, 45, 0.25], low_tom: [160, 90, 0.35], mid_tom: [220, 130, 0.3], high_tom: [300, 180, 0.25],
  };

  const context = () => ctx || (ctx = new (window.AudioContext || window.webkitAudioContext)());
  const hz = pitch => 440 * Math.pow(2, (pitch - 69) / 12);
  const clock = s => `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}`;

  function noiseBuffer(c) {
    if (noise) return noise;
    noise = c.createBuffer(1, c.sampleRate, c.sampleRate);
    const d = noise.getChannelData(0);
    let x = 1;  // a fixed linear congruential generator (Numerical Recipes' constants): the same noise every time
    for (let i = 0; i < d.length; i++) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      d[i] = x / 2147483648 - 1;
    }
    return noise;
  }

  function tone(c, bus, t, dur, pitch, vel, seed) {
    const o = c.createOscillator(), g = c.createGain(), peak = (seed ? 0.12 : 0.2) * vel / 127;
    o.type = seed ? 'sine' : 'triangle';
    o.frequency.value = hz(pitch);
    g.gain.setValueAtTime(0, t);
    g.gain.linearRampToValueAtTime(peak, t + 0.01);
    g.gain.setTargetAtTime(peak * 0.6, t + 0.01, 0.2);
    g.gain.setTargetAtTime(0, t + dur, 0.04);
    o.connect(g).connect(bus);
    o.start(t);
    o.stop(t + dur + 0.3);
  }

  function drum(c, bus, t, name, vel, seed) {
    const spec = DRUMS[name] || DRUMS.closed_hihat, g = c.createGain(), peak = (seed ? 0.35 : 0.6) * vel / 127;
    let src, len;
    if (spec.length === 3) {
      const [from, to, l] = spec;
      len = l;
      src = c.createOscillator();
      src.frequency.setValueAtTime(from, t);
      src.frequency.exponentialRampToValueAtTime(to, t + len);
      src.connect(g);
    } else {
      const [type, f, q, l] = spec, filter = c.createBiquadFilter();
      len = l;
      src = c.createBufferSource();
      src.buffer = noiseBuffer(c);
      filter.type = type;
      filter.frequency.value = f;
      filter.Q.value = q;
      src.connect(filter).connect(g);
    }
    g.gain.setValueAtTime(peak, t);
    g.gain.exponentialRampToValueAtTime(0.001, t + len);
    g.connect(bus);
    src.start(t);
    src.stop(t + len + 0.05);
  }

  function show(card, state, text) {
    const status = card.querySelector('.play-status');
    status.dataset.state = state;
    status.textContent = text;
    return status;
  }

  function stop(state = 'stopped', text = 'stopped') {
    if (!playing) return;
    const p = playing;
    playing = null;
    if (p.frame) cancelAnimationFrame(p.frame);
    if (p.bus) p.bus.disconnect();  // silences every note still scheduled on it
    p.card.querySelector('button.play').textContent = '▶ play';
    p.card.querySelector('.cursor').hidden = true;
    show(p.card, state, text);
  }

  async function play(card) {
    const again = playing && playing.card === card;
    stop();
    if (again) return;  // the button toggles
    const data = JSON.parse(card.querySelector('script.notes').textContent);
    const c = context(), me = {card};
    playing = me;
    card.querySelector('button.play').textContent = '■ stop';
    show(card, 'starting', 'starting… (if nothing plays, the browser holds audio back: click again)');
    if (c.state !== 'running') await c.resume();  // settles once the browser lets this page play
    if (playing !== me) return;  // stopped, or another sample started, meanwhile
    me.bus = c.createGain();
    const squash = c.createDynamicsCompressor();  // chords of many notes must not clip
    me.bus.connect(squash).connect(c.destination);
    const t0 = c.currentTime + LEAD;
    let n = 0;
    for (const [start, dur, pitch, vel, drumClass, part] of data.notes) {
      if (drumClass >= 0) drum(c, me.bus, t0 + start, data.drum_classes[drumClass], vel, part === 0);
      else tone(c, me.bus, t0 + start, dur, pitch, vel, part === 0);
      n++;
    }
    const status = show(card, c.state, '');
    status.dataset.scheduled = String(n);
    const cursor = card.querySelector('.cursor'), a = data.area, total = data.total_seconds;
    cursor.style.top = `${a.top * 100}%`;
    cursor.style.height = `${(a.bottom - a.top) * 100}%`;
    cursor.hidden = false;
    const frame = () => {
      if (playing !== me) return;
      const t = Math.max(c.currentTime - t0, 0);
      const part = t < data.seed_seconds ? 'seed' : 'generated';
      cursor.style.left = `${(a.left + Math.min(t / total, 1) * (a.right - a.left)) * 100}%`;
      cursor.className = `cursor ${part}`;
      status.dataset.part = part;
      status.dataset.position = t.toFixed(3);
      status.dataset.state = c.state;
      status.textContent = `playing the ${part === 'seed' ? 'seed' : 'continuation'}: ${clock(t)} of ${clock(total)}, ` +
        `${n} notes scheduled`;
      if (t > total + 0.3) return stop('ended', `played ${n} notes (${clock(total)})`);
      me.frame = requestAnimationFrame(frame);
    };
    frame();
  }

  document.querySelectorAll('.sample button.play').forEach(b => {
    b.addEventListener('click', () => play(b.closest('.sample')));
  });
  window.addEventListener('load', () => {
    const m = /^#play=([\w.-]+)$/.exec(location.hash);
    const card = m && document.getElementById(m[1]);
    if (card && card.querySelector('button.play')) card.querySelector('button.play').click();
  });
})();
