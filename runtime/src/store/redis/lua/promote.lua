-- Marks due scheduled and retrying jobs as queued. ARGV: now, limit. Returns how many.
return promote(ARGV[1], tonumber(ARGV[2]))
