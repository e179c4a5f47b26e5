-- Argo CD health for llmops.dev FinetuneJob, read from status.conditions and observedGeneration.
-- Healthy: Succeeded and (Published true or no Published condition). Degraded: Failed, Stalled,
-- CheckpointFailing. Suspended: Suspended. Progressing: everything else (training, publishing).
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
local succeeded, sc = istrue("Succeeded")
if succeeded then
  local pc = cond("Published")
  if pc == nil then hs.status = "Healthy"; hs.message = say(sc, "Succeeded"); return hs end
  if pc.status == "True" then hs.status = "Healthy"; hs.message = say(pc, "Published"); return hs end
  hs.message = say(pc, "Publishing")
  return hs
end
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
hs.message = "Waiting for training to start"
return hs
