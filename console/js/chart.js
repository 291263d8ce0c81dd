// A bar chart in plain SVG (no library): one bar per hour, labelled axes, and a title and
// description for screen readers.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The smallest "round" step (1, 2 or 5 times a power of ten, at least 1) ≥ `x`. */
function niceStep(x) {
  if (x <= 1) return 1;
  const exp = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * exp >= x) return m * exp;
  return 10 * exp;
}

/**
 * points: [{label: Date, value: number}]; format(value) → text for ticks and tooltips.
 */
export function barChart({ title, description, points, format, cls = '' }) {
  const width = 720;
  const height = 220;
  const left = 64;
  const right = 36;
  const top = 12;
  const bottom = 34;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  // Four gridlines at round values: 0, step, 2·step, 3·step, 4·step.
  const step = niceStep(Math.max(0, ...points.map((p) => p.value)) / 4);
  const max = step * 4;
  const id = `c${Math.random().toString(36).slice(2, 8)}`;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${id}-t ${id}-d` });
  svg.append(s('title', { id: `${id}-t` }, title), s('desc', { id: `${id}-d` }, description));
  for (let i = 0; i <= 4; i += 1) {
    const y = top + plotH - (plotH * i) / 4;
    svg.append(s('line', { class: 'grid-line', x1: left, x2: width - right, y1: y, y2: y }));
    svg.append(s('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, format(step * i)));
  }
  svg.append(s('line', { class: 'axis', x1: left, x2: width - right, y1: top + plotH, y2: top + plotH }));
  const n = Math.max(points.length, 1);
  const slot = plotW / n;
  const labelEvery = Math.max(1, Math.ceil(n / 12));
  points.forEach((p, i) => {
    const x = left + i * slot;
    const barH = (plotH * p.value) / max;
    if (p.value > 0) {
      const bar = s('rect', { class: `bar ${cls}`, x: x + slot * 0.15, y: top + plotH - barH, width: Math.max(1, slot * 0.7), height: Math.max(1, barH) });
      bar.append(s('title', {}, `${hourLabel(p.label, true)}: ${format(p.value)}`));
      svg.append(bar);
    }
    if (i % labelEvery === 0) {
      svg.append(s('text', { x: x + slot / 2, y: height - 14, 'text-anchor': 'middle' }, hourLabel(p.label, n > 24)));
    }
  });
  return svg;
}

export function hourLabel(date, withDay) {
  const hh = String(date.getHours()).padStart(2, '0');
  if (!withDay) return `${hh}:00`;
  return `${date.getDate()}/${date.getMonth() + 1} ${hh}:00`;
}
