// The admin dashboard: one self-contained page (no build step, no external assets) polling
// /status and /history once a second: workers as columns, backends with health, a chart of
// connections and handoffs over the last minutes (history kept by the supervisor), and
// migrations, reloads and restarts as they happen. Element ids are what the browser test reads.
export function dashboardHtml(): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fdproxy</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:20px;background:#f6f7f9;color:#222}h1{font-size:20px;margin:0 0 12px}
h2{font-size:15px;margin:18px 0 6px}.muted{color:#777}
.cols{display:flex;gap:12px;flex-wrap:wrap}.w{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;min-width:190px}
.w.retiring{opacity:.55;border-style:dashed}.n{font-size:30px;font-weight:600}
table{border-collapse:collapse;background:#fff}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
.up{color:#080}.down{color:#c00;font-weight:600}.unk{color:#777}
canvas{background:#fff;border:1px solid #ddd;max-width:100%}
#events{background:#fff;border:1px solid #ddd;max-height:220px;overflow:auto;padding:6px 10px;font:12px ui-monospace,monospace;margin:0;list-style:none}
.k{font:12px ui-monospace,monospace}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
</style></head>
<body><h1>fdproxy <span id="state" class="muted"></span> — generation <span id="gen"></span>
<span class="muted" id="summary"></span></h1>
<div class="cols" id="workers"></div>
<h2>Connections and handoffs, last <span id="span">5</span> minutes</h2>
<div class="legend"><span><i class="sw" style="background:#1f6feb"></i>open connections</span>
<span><i class="sw" style="background:#e36209"></i>handoffs/s</span><span><i class="sw" style="background:#8250df"></i>migrations/s</span></div>
<canvas id="chart" width="900" height="180"></canvas>
<h2>Migrations and events</h2><ul id="events"><li class="muted">none yet</li></ul>
<h2>Backends</h2><table id="backends"></table>
<h2>Top keys</h2><table id="keys"></table>
<script>
"use strict";
const $=id=>document.getElementById(id);
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
let samples=[],events=[],since=0,ticks=0;
async function get(p){const r=await fetch(p,{cache:'no-store'});return r.json();}
function workers(s){
  const all=s.workers.map(w=>Object.assign({},w,{retiring:false})).concat(s.retiring.map(w=>Object.assign({},w,{retiring:true})));
  $('workers').innerHTML=all.map(w=>'<div class="w worker'+(w.retiring?' retiring':'')+'" data-slot="'+w.slot+'">'+
    '<b>worker '+w.slot+'</b> <span class="muted">pid '+w.pid+' · gen '+w.gen+(w.retiring?' · retiring':'')+'</span>'+
    '<div class="n conns">'+w.connections+'</div>connections ('+w.websockets+' ws, '+w.http+' http)<br>'+
    '<span class="keys">'+w.keys+'</span> keys · up '+w.uptime_s+' s<br><span class="muted">in '+w.handoffs_in+' · migrated out '+w.migrations_out+' / in '+w.migrations_in+'</span>'+
    (w.top_keys.length?'<div class="k">'+w.top_keys.slice(0,5).map(k=>esc(k[0])+' '+k[1]).join('<br>')+'</div>':'')+'</div>').join('');
  const total=s.workers.reduce((a,w)=>a+w.connections,0);
  $('summary').textContent=' · '+s.workers.length+' workers · '+total+' connections'+(s.acceptors&&s.acceptors.length>1?' · '+s.acceptors.length+' acceptors':'');
}
function backends(s){
  let h='<tr><th>backend</th><th>server</th><th>weight</th><th>health</th><th>active</th></tr>';
  for(const b of s.backends)for(const v of b.servers){
    const st=v.healthy===null?'<td class="unk">'+(b.health_checked?'checking':'not checked')+'</td>':v.healthy?'<td class="up">up</td>':'<td class="down">down</td>';
    h+='<tr><td>'+esc(b.name)+'</td><td>'+esc(v.id)+'</td><td>'+v.weight+'</td>'+st+'<td>'+(v.active||0)+'</td></tr>';
  }
  $('backends').innerHTML=h;
  let k='<tr><th>key</th><th>worker</th><th>connections</th></tr>';
  for(const t of (s.top_keys||[]).slice(0,10))k+='<tr><td class="k">'+esc(t.key)+'</td><td>'+t.slot+'</td><td>'+t.connections+'</td></tr>';
  $('keys').innerHTML=k;
}
function chart(){
  const c=$('chart'),g=c.getContext('2d'),W=c.width,H=c.height,N=300;
  const pts=samples.slice(-N);$('span').textContent=Math.max(1,Math.round(pts.length/60));
  g.clearRect(0,0,W,H);g.font='11px sans-serif';
  const line=(vals,max,color)=>{g.strokeStyle=color;g.lineWidth=1.5;g.beginPath();
    vals.forEach((v,i)=>{const x=W-(vals.length-1-i)*W/N,y=H-8-v*(H-24)/max;i?g.lineTo(x,y):g.moveTo(x,y);});g.stroke();};
  const cm=Math.max(1,...pts.map(p=>p.connections)),hm=Math.max(1,...pts.map(p=>Math.max(p.handoffs,p.migrations)));
  line(pts.map(p=>p.connections),cm,'#1f6feb');line(pts.map(p=>p.handoffs),hm,'#e36209');line(pts.map(p=>p.migrations),hm,'#8250df');
  g.fillStyle='#1f6feb';g.fillText('connections max '+cm,6,12);g.fillStyle='#e36209';g.fillText('per second max '+hm,W-120,12);
}
function eventsList(){
  if(!events.length)return;
  $('events').innerHTML=events.slice(-60).reverse().map(e=>'<li class="ev ev-'+e.kind+'">'+new Date(e.t).toLocaleTimeString()+'  '+esc(e.text)+'</li>').join('');
}
async function tick(){
  try{
    const [s,h]=await Promise.all([get('/status'),get('/history?since='+since)]);
    $('state').textContent=s.state;$('gen').textContent=s.generation;
    workers(s);backends(s);
    samples=samples.concat(h.samples).slice(-600);events=events.concat(h.events).slice(-200);
    if(h.samples.length)since=h.samples[h.samples.length-1].t;
    chart();eventsList();
    document.body.dataset.ticks=String(++ticks);
  }catch(e){$('state').textContent='(admin endpoint unreachable)';}
}
tick();setInterval(tick,1000);
</script></body></html>`;
}
