// The admin dashboard: one self-contained page polling /status (no build step).
export function dashboardHtml(): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>fdproxy</title>
<style>body{font:14px system-ui,sans-serif;margin:20px;background:#fafafa}h1{font-size:20px}
.cols{display:flex;gap:12px;flex-wrap:wrap}.w{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;min-width:180px}
.n{font-size:28px;font-weight:600}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}
.up{color:#080}.down{color:#c00}canvas{background:#fff;border:1px solid #ddd}</style></head>
<body><h1>fdproxy <span id="state"></span> — generation <span id="gen"></span></h1>
<div class="cols" id="workers"></div>
<h2>Connections and handoffs (last 5 minutes)</h2><canvas id="chart" width="720" height="160"></canvas>
<h2>Backends</h2><table id="backends"></table>
<h2>Top keys</h2><table id="keys"></table>
<script>
const hist=[];
async function tick(){
  let s; try{ s=await (await fetch('/status')).json(); }catch(e){ return; }
  document.getElementById('state').textContent=s.state; document.getElementById('gen').textContent=s.generation;
  const ws=document.getElementById('workers'); ws.innerHTML='';
  for(const w of s.workers){ const d=document.createElement('div'); d.className='w worker';
    d.innerHTML='<b>worker '+w.slot+'</b> pid '+w.pid+'<div class="n conns">'+w.connections+'</div>connections ('+w.websockets+' ws, '+w.http+' http)<br>'+w.keys+' keys';
    ws.appendChild(d); }
  const b=document.getElementById('backends'); b.innerHTML='<tr><th>backend</th><th>server</th><th>health</th></tr>';
  for(const be of s.backends) for(const sv of be.servers) b.innerHTML+='<tr><td>'+be.name+'</td><td>'+sv.id+'</td><td class="'+(sv.healthy===false?'down':'up')+'">'+(sv.healthy===null?'unchecked':sv.healthy?'up':'down')+'</td></tr>';
  const k=document.getElementById('keys'); k.innerHTML='<tr><th>key</th><th>worker</th><th>connections</th></tr>';
  for(const t of s.top_keys.slice(0,10)) k.innerHTML+='<tr><td>'+String(t.key).replace(/</g,'&lt;')+'</td><td>'+t.slot+'</td><td>'+t.connections+'</td></tr>';
  const total=s.workers.reduce((a,w)=>a+w.connections,0); hist.push(total); if(hist.length>300) hist.shift();
  const c=document.getElementById('chart').getContext('2d'); c.clearRect(0,0,720,160);
  const max=Math.max(1,...hist); c.beginPath(); hist.forEach((v,i)=>{const x=i*720/300,y=155-v*150/max; i?c.lineTo(x,y):c.moveTo(x,y);}); c.stroke();
  c.fillText('max '+max,5,12);
}
tick(); setInterval(tick,1000);
</script></body></html>`;
}
