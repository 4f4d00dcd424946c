// Status icons: each status has its own shape, so a tile never relies on colour alone.

const SHAPES = {
  // a ring with a check
  available:
    '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="2.5"/>' +
    '<path d="M7.5 12.5l3 3 6-6.5" fill="none" stroke="currentColor" stroke-width="2.5"/>',
  // a play triangle
  in_use: '<path d="M7 4.5v15l13-7.5z" fill="currentColor"/>',
  // a clock
  reserved:
    '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="2.5"/>' +
    '<path d="M12 7v5.5l3.5 2" fill="none" stroke="currentColor" stroke-width="2.5"/>',
  // an hourglass: held for the head of a waitlist line
  held:
    '<path d="M6 3h12M6 21h12M7 3c0 5 10 5 10 9s-10 4-10 9M17 3c0 5-10 5-10 9s10 4 10 9" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linejoin="round"/>',
  // a crossed square
  offline:
    '<rect x="4" y="4" width="16" height="16" rx="2" fill="none" stroke="currentColor" stroke-width="2.5"/>' +
    '<path d="M8.5 8.5l7 7m0-7l-7 7" stroke="currentColor" stroke-width="2.5"/>',
  // a warning triangle
  fault:
    '<path d="M12 3l10 18H2z" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linejoin="round"/>' +
    '<path d="M12 9.5v5" stroke="currentColor" stroke-width="2.4"/><circle cx="12" cy="17.6" r="1.4" fill="currentColor"/>',
  // a wrench-like bar with a bolt head
  maintenance:
    '<path d="M14.5 3.5a5 5 0 0 0-4.6 6.9L3.5 16.8l3.7 3.7 6.4-6.4a5 5 0 0 0 6.9-4.6l-3 3-3-1-1-3z" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/>',
  // connection states
  live: '<circle cx="12" cy="12" r="6" fill="currentColor"/>',
  connecting:
    '<circle cx="12" cy="12" r="8" fill="none" stroke="currentColor" stroke-width="2.5" stroke-dasharray="4 3"/>',
  reconnecting:
    '<path d="M19 12a7 7 0 1 1-2-4.9M19 4v4h-4" fill="none" stroke="currentColor" stroke-width="2.5"/>',
  degraded:
    '<path d="M12 3l10 18H2z" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linejoin="round"/>' +
    '<path d="M12 9.5v5" stroke="currentColor" stroke-width="2.4"/><circle cx="12" cy="17.6" r="1.4" fill="currentColor"/>',
  bell:
    '<path d="M6 16V11a6 6 0 0 1 12 0v5l2 2H4z M10 20a2 2 0 0 0 4 0" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"/>',
};
SHAPES.offline_conn = SHAPES.offline;

export function icon(name, className = "icon") {
  const shape = SHAPES[name] || SHAPES.offline;
  return `<svg class="${className}" viewBox="0 0 24 24" aria-hidden="true" focusable="false">${shape}</svg>`;
}
