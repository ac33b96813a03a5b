-- Argo CD health of a modelfleet.io/v1alpha1 EdgeDevice, from status.health, the worst health of the
-- device's targets as the fleet gateway writes it from the agent's reports (modelfleet.api.edgedevice).
-- Lua 5.1, as Argo CD runs it; `obj` is the resource. tests/test_argocd_health.py runs it.
--
--   Healthy      status.health Healthy
--   Degraded     Degraded or Failed (the message names the first target's last error)
--   Progressing  no report yet, or Unknown (enrolled, nothing installed and checked yet)
local hs = {}

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local function first_error(status)
  if status.targets == nil then
    return nil
  end
  for _, t in ipairs(status.targets) do
    if t.lastError ~= nil then
      local text = t.model .. "/" .. t.target .. ": " .. t.lastError.reason
      if t.lastError.message ~= nil and t.lastError.message ~= "" then
        text = text .. ": " .. t.lastError.message
      end
      return text
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.health == nil then
  return result("Progressing", "Waiting for the device's first report")
end
local installed = status.installed
if installed == nil or installed == "" then
  installed = "nothing installed"
end
if status.health == "Healthy" then
  return result("Healthy", installed)
end
if status.health == "Degraded" or status.health == "Failed" then
  local problem = first_error(status)
  if problem ~= nil then
    return result("Degraded", status.health .. " (" .. installed .. "); " .. problem)
  end
  return result("Degraded", status.health .. " (" .. installed .. ")")
end
return result("Progressing", "Health " .. tostring(status.health) .. " (" .. installed .. ")")
