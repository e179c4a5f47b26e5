-- Argo CD health for llmops.dev InferenceService, read from status.conditions and observedGeneration.
-- Healthy: Ready (rollout finished) or scaled to zero by opt-in. Degraded: Degraded true or a model
-- digest mismatch. Progressing: not observed yet, a newer generation, a rollout, model fetching.
local hs = {status = "Progressing", message = "Waiting for the operator to observe the service"}

local function cond(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then return c.reason .. ": " .. c.message end
  if c ~= nil and c.reason ~= nil then return c.reason end
  return fallback
end

if obj.status == nil or obj.status.conditions == nil then return hs end
local gen = obj.metadata.generation
local seen = obj.status.observedGeneration
if gen ~= nil and (seen == nil or seen < gen) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(gen)
  return hs
end

local ready = cond("Ready")
local degraded = cond("Degraded")
local progressing = cond("Progressing")
local cached = cond("ModelCached")

if cached ~= nil and cached.reason == "ModelDigestMismatch" then
  hs.status = "Degraded"; hs.message = say(cached, "ModelDigestMismatch"); return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"; hs.message = say(degraded, "Degraded"); return hs
end
if ready ~= nil and ready.status == "True" then
  if progressing ~= nil and progressing.status == "True" and progressing.reason == "RolloutInProgress" then
    hs.message = say(progressing, "RolloutInProgress"); return hs
  end
  hs.status = "Healthy"; hs.message = say(ready, "Ready"); return hs
end
if ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Healthy"; hs.message = say(ready, "ScaledToZero"); return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.message = say(progressing, "Progressing"); return hs
end
if ready ~= nil then hs.message = say(ready, "NotReady"); return hs end
hs.message = "Waiting for replicas"
return hs
