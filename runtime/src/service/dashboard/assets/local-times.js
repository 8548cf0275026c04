// Times are rendered in UTC; this shows each `<time class="local">` also in the viewer's zone.
for (const t of document.querySelectorAll('time.local')) {
  const d = new Date(t.getAttribute('datetime'));
  if (!isNaN(d)) {
    const s = document.createElement('span');
    s.className = 'muted';
    s.textContent = ' (' + d.toLocaleString() + ' local)';
    t.after(s);
  }
}
