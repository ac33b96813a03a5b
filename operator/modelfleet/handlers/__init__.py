"""kopf registrations: thin wrappers that hand every event to `modelfleet.controller`."""
