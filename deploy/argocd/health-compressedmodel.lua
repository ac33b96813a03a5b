-- Argo CD health of a modelfleet.io/v1alpha1 CompressedModel, read from its status conditions
-- (modelfleet.domain.status and modelfleet.domain.rollout write them; tests/test_argocd_health.py runs this
-- script on the statuses those functions produce). Lua 5.1, as Argo CD runs it; `obj` is the resource.
--
--   Progressing  the operator has not observed the current generation yet, or work is under way:
--                Ready=False/Unknown with a reason of work in progress, bundles being built, a rollout's
--                wave open or baking
--   Degraded     Ready=False for any other reason (an invalid spec, a failed Job, SLOs not met, a stuck
--                worker pod), a failed bundle build, or a halted edge rollout
--   Suspended    an edge rollout paused by its spec (spec.targets.edge[].rollout.paused)
--   Healthy      Ready=True and nothing above
local hs = {}

-- Reasons of work in progress: modelfleet.domain.status.IN_PROGRESS.
local IN_PROGRESS = {
  Compressing = true, AwaitingResult = true, Publishing = true, AwaitingGate = true,
  AwaitingPreviousPublish = true, Bundling = true,
}
-- RolledOut=False reasons of a rollout that moves on by itself (modelfleet.domain.rollout).
local ROLLING = { WaveOpened = true, WaveBaking = true, AwaitingDevices = true }

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if status == nil then
  return result("Progressing", "Waiting for the operator to reconcile the resource")
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return result("Progressing", "Waiting for the operator to observe generation " .. tostring(generation))
end

local ready = condition(status, "Ready")
if ready == nil then
  return result("Progressing", "Waiting for the Ready condition")
end
if ready.status ~= "True" then
  if ready.status == "Unknown" or IN_PROGRESS[ready.reason] then
    return result("Progressing", describe(ready))
  end
  return result("Degraded", describe(ready))
end

-- Ready: the artifacts and Triton. Edge bundles and rollouts go their own way.
local halted = condition(status, "RolloutHalted")
if halted ~= nil and halted.status == "True" then
  return result("Degraded", "Edge rollout halted: " .. describe(halted))
end
local bundled = condition(status, "Bundled")
if bundled ~= nil and bundled.status ~= "True" then
  if bundled.status == "Unknown" and IN_PROGRESS[bundled.reason] then
    return result("Progressing", describe(bundled))
  end
  return result("Degraded", "Edge bundles: " .. describe(bundled))
end
local rolled = condition(status, "RolledOut")
if rolled ~= nil and rolled.status ~= "True" then
  if rolled.reason == "Paused" then
    return result("Suspended", "Edge rollout paused: " .. describe(rolled))
  end
  if ROLLING[rolled.reason] then
    return result("Progressing", "Edge rollout: " .. describe(rolled))
  end
end

if ready.message ~= nil and ready.message ~= "" then
  return result("Healthy", ready.message)
end
return result("Healthy", "Ready")
