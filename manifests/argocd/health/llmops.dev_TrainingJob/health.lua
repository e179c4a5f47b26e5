-- Argo CD health for llmops.dev TrainingJob, read from status.conditions and observedGeneration.
-- Healthy: Succeeded. Degraded: Failed, Stalled, CheckpointFailing. Suspended: Suspended.
-- Progressing: not yet observed, a newer generation not yet observed, queued, running, restarting.
local hs = {status = "Progressing", message = "Waiting for the operator to observe the job"}

local function cond(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end

local function istrue(t)
  local c = cond(t)
  return c ~= nil and c.status == "True", c
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

local ok, c = istrue("Failed")
if ok then hs.status = "Degraded"; hs.message = say(c, "Failed"); return hs end
ok, c = istrue("Succeeded")
if ok then hs.status = "Healthy"; hs.message = say(c, "Succeeded"); return hs end
ok, c = istrue("Suspended")
if ok then hs.status = "Suspended"; hs.message = say(c, "Suspended"); return hs end
ok, c = istrue("Stalled")
if ok then hs.status = "Degraded"; hs.message = say(c, "Stalled"); return hs end
ok, c = istrue("CheckpointFailing")
if ok then hs.status = "Degraded"; hs.message = say(c, "CheckpointFailing"); return hs end
for _, t in ipairs({"Restarting", "Running", "Queued"}) do
  ok, c = istrue(t)
  if ok then hs.message = say(c, t); return hs end
end
hs.message = "Waiting for the gang to start"
return hs
