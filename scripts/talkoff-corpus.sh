#!/bin/sh
# Writes the DTMF talk-off corpus: speech with no digits, made with espeak-ng
# in several languages and voices (more than ten minutes in all), as 16-bit
# mono WAV files in OUTDIR. Generated when the tests run; never committed as
# audio (docs/dtmf.md row 9, talk-off; row 10 reuses it for talk-down).
#
# usage: scripts/talkoff-corpus.sh OUTDIR
set -eu

out=${1:?usage: talkoff-corpus.sh OUTDIR}
command -v espeak-ng >/dev/null 2>&1 || { echo "espeak-ng not installed" >&2; exit 127; }
mkdir -p "$out"

en="The meeting started a little late because the projector would not turn on, so we talked about the weather, the new office downstairs and the long queue at the coffee machine. Then Margaret walked us through the budget: travel is down by a third, hardware is up, and the training money has to be spent before the end of the quarter or it is lost. Somebody asked whether the warehouse in the north would still close in spring. Nobody knew for sure. We agreed to meet again next Thursday at half past nine, and to invite the people from accounting, who have been asking for the numbers since early summer. Please remember to mute your phone when you are not speaking, and speak clearly so that everybody can follow."
de="Guten Morgen zusammen, ich hoffe, alle können mich gut hören. Heute sprechen wir über die Lieferungen der letzten Woche, über die neue Software im Lager und über den Urlaubsplan für den Sommer. Die Zahlen sehen besser aus als im letzten Jahr, aber die Transportkosten sind deutlich gestiegen. Frau Schneider wird uns gleich erklären, warum die Bestellung aus Hamburg zweimal verschickt wurde. Danach bitte ich jeden, kurz zu sagen, woran er gerade arbeitet und wo er Hilfe braucht. Wir machen um elf Uhr eine kurze Pause und enden spätestens um zwölf."
fr="Bonjour à tous et merci d'être présents malgré la grève des transports. Nous allons commencer par un rapide tour de table, puis nous parlerons du nouveau contrat avec nos partenaires de Lyon. Les premiers résultats sont encourageants, mais il reste beaucoup de travail sur la qualité du service après vente. Jacqueline, pourrais-tu nous rappeler les délais de livraison prévus pour le mois prochain? Ensuite, nous verrons ensemble le calendrier des formations et la question du télétravail, qui intéresse beaucoup de monde. N'hésitez pas à poser vos questions à la fin de la réunion."
es="Buenas tardes a todos, vamos a empezar la reunión porque tenemos muchos temas pendientes. Primero quiero agradecer al equipo de Sevilla por el esfuerzo de las últimas semanas, que ha sido enorme. Las ventas han subido un poco, aunque los costes de la energía siguen siendo muy altos. Después hablaremos de las vacaciones de agosto y de la mudanza a la nueva oficina, que será más pequeña pero más luminosa. Si alguien tiene una pregunta, por favor que levante la mano o que escriba en el chat. Terminaremos a las cinco en punto."
it="Buongiorno a tutti, cominciamo con qualche minuto di ritardo perché la connessione oggi è molto lenta. Vorrei parlare prima del progetto di Milano, che procede bene, e poi della nuova organizzazione dei turni in magazzino. Il cliente di Torino ha chiesto uno sconto sulla prossima fornitura e dobbiamo decidere insieme cosa rispondere. Giulia preparerà una proposta entro venerdì. Alla fine della riunione parleremo anche delle ferie estive e della cena di fine anno, che quest'anno vorremmo fare in campagna."
nl="Goedemiddag allemaal, fijn dat jullie er zijn. We beginnen met een korte terugblik op de afgelopen maand, daarna bespreken we de planning voor het nieuwe seizoen. De verkoop in Utrecht loopt goed, maar in Rotterdam blijven de cijfers achter. Pieter gaat uitzoeken waar dat aan ligt en komt volgende week met een voorstel. Verder willen we graag weten wie er mee wil naar de beurs in september. Denk ook aan het invullen van de enquête over de werkplekken. We sluiten af om vier uur."

say() {
    # say NAME VOICE SPEED PITCH TEXT
    espeak-ng -v "$2" -s "$3" -p "$4" -w "$out/$1.wav" "$5"
}

say en-m1 en+m1 150 50 "$en"
say en-f3 en+f3 170 70 "$en"
say en-us-m3 en-us+m3 140 35 "$en"
say en-gb-f4 en-gb+f4 160 60 "$en"
say de-m2 de+m2 150 45 "$de"
say de-f1 de+f1 165 65 "$de"
say fr-m4 fr+m4 150 50 "$fr"
say fr-f2 fr+f2 160 70 "$fr"
say es-m3 es+m3 155 40 "$es"
say es-f5 es+f5 165 75 "$es"
say it-m1 it+m1 150 55 "$it"
say it-f4 it+f4 160 80 "$it"
say nl-m6 nl+m6 145 30 "$nl"
say nl-f3 nl+f3 165 65 "$nl"
say en-klatt en+klatt 135 50 "$en"
say en-us-f2 en-us+f2 130 85 "$en"
say de-m4 de+m4 135 25 "$de"
say fr-f5 fr+f5 135 60 "$fr"
say es-m6 es+m6 140 45 "$es"
say it-m2 it+m2 140 40 "$it"
say nl-f2 nl+f2 135 70 "$nl"
